// Publish a tenant signup to pgfleet from Node.js, as application code would on signup.
//
//   npm ci --prefix examples/node
//   TENANT=acme-corp node examples/node/publish_signup.js
//
// The message is a `provision` job (DESIGN.md "Messages"): pgfleet creates the tenant's
// role, database and schema. `key` makes a retried signup the same job, done once. The
// channel is a confirm channel: once waitForConfirms() resolves, the job is safely queued.
const amqp = require("amqplib");

async function main() {
  const namespace = process.env.PGFLEET_NAMESPACE || "pgfleet";
  const url = process.env.PGFLEET_AMQP_URL || "amqp://guest:guest@127.0.0.1:5672/%2f";
  const tenant = process.env.TENANT || "acme-corp";
  const key = process.env.SIGNUP_KEY || `signup-${tenant}`;

  const connection = await amqp.connect(url);
  try {
    const channel = await connection.createConfirmChannel();
    // A message the exchange cannot route comes back instead of vanishing.
    let returned = false;
    channel.on("return", () => { returned = true; });
    const body = { kind: "provision", tenant, key };
    if (process.env.REGION) body.region = process.env.REGION;
    channel.publish(`${namespace}.jobs`, "provision", Buffer.from(JSON.stringify(body)),
                    { contentType: "application/json", persistent: true, mandatory: true });
    await channel.waitForConfirms(); // rejects if the broker nacks
    if (returned) throw new Error(`exchange ${namespace}.jobs could not route the signup; is pgfleet's topology declared?`);
  } finally {
    await connection.close();
  }
  console.error(`signup of ${tenant} published (key ${key})`);
}

main().catch((err) => { console.error(err.message || err); process.exit(1); });
