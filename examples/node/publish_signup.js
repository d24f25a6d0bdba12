// Publish a tenant signup to pgfleet from Node.js (npm install amqplib).
const amqp = require("amqplib");

async function main() {
  const ns = process.env.PGFLEET_NAMESPACE || "pgfleet";
  const conn = await amqp.connect(process.env.PGFLEET_AMQP_URL || "amqp://guest:guest@127.0.0.1:5672/%2f");
  const channel = await conn.createConfirmChannel(); // waitForConfirms() throws on a nack
  const body = { kind: "provision", tenant: process.env.TENANT || "acme-corp", key: "signup-8841" };
  channel.publish(`${ns}.jobs`, "provision", Buffer.from(JSON.stringify(body)),
                  { contentType: "application/json", persistent: true });
  await channel.waitForConfirms();
  await conn.close();
}
main().catch((err) => { console.error(err); process.exit(1); });
