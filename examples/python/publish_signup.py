"""Publish a tenant signup to pgfleet from Python (pip install pika)."""
import json, os, pika

ns = os.environ.get("PGFLEET_NAMESPACE", "pgfleet")
url = os.environ.get("PGFLEET_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
conn = pika.BlockingConnection(pika.URLParameters(url))
channel = conn.channel()
channel.confirm_delivery()  # raises if the broker does not accept the message
body = {"kind": "provision", "tenant": os.environ.get("TENANT", "acme-corp"), "key": "signup-8841"}
channel.basic_publish(exchange=f"{ns}.jobs", routing_key="provision", body=json.dumps(body),
                      properties=pika.BasicProperties(content_type="application/json", delivery_mode=2),
                      mandatory=True)
conn.close()
