"""Publish a tenant signup to pgfleet from Python, as application code would on signup.

    pip install pika
    TENANT=acme-corp python3 examples/python/publish_signup.py

The message is a `provision` job (DESIGN.md "Messages"): pgfleet creates the tenant's role,
database and schema. `key` makes a retried signup the same job, done once. The publish is
confirmed by the broker (and `mandatory`, so a wrong exchange or routing key raises instead
of vanishing): when this script exits 0, the job is safely queued.
"""
import json
import os
import sys

import pika

namespace = os.environ.get("PGFLEET_NAMESPACE", "pgfleet")
url = os.environ.get("PGFLEET_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
tenant = os.environ.get("TENANT", "acme-corp")
key = os.environ.get("SIGNUP_KEY", f"signup-{tenant}")

connection = pika.BlockingConnection(pika.URLParameters(url))
try:
    channel = connection.channel()
    channel.confirm_delivery()  # basic_publish now raises if the broker nacks or can't route
    body = {"kind": "provision", "tenant": tenant, "key": key}
    region = os.environ.get("REGION")
    if region:
        body["region"] = region
    channel.basic_publish(
        exchange=f"{namespace}.jobs",
        routing_key="provision",
        body=json.dumps(body).encode(),
        properties=pika.BasicProperties(content_type="application/json", delivery_mode=2),
        mandatory=True,
    )
finally:
    connection.close()
print(f"signup of {tenant} published (key {key})", file=sys.stderr)
