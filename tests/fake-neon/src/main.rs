//! `fake-neon --listen 127.0.0.1:4444 --api-key KEY [--operation-ms 200] [--rate-limit 700
//! --burst 40]`: the fake Neon API as a process (benchmarks, trying pgfleet by hand).
//! Projects become roles and databases on `--admin-url` (default: the local Postgres).

use fake_neon::{FakeNeon, FakeNeonConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut config = FakeNeonConfig::local("fake-neon-key", "fakeneon");
    let mut listen = "127.0.0.1:4444".to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| anyhow::anyhow!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => listen = value()?,
            "--api-key" => config.api_key = value()?,
            "--admin-url" => config.admin_url = value()?,
            "--prefix" => config.local_prefix = value()?,
            "--operation-ms" => config.operation_ms = value()?.parse()?,
            "--rate-limit" => config.rate_limit.get_or_insert((700, 40)).0 = value()?.parse()?,
            "--burst" => config.rate_limit.get_or_insert((700, 40)).1 = value()?.parse()?,
            other => anyhow::bail!("unknown flag {other}"),
        }
    }
    let fake = FakeNeon::start_on(config, &listen).await?;
    eprintln!("fake Neon API listening on {}", fake.url);
    tokio::signal::ctrl_c().await?;
    Ok(())
}
