//! RabbitMQ over TLS (`amqps://`). The local broker has no TLS listener, so the test puts a
//! TLS-terminating proxy in front of it (a certificate from a private CA made with `openssl`),
//! the way a managed broker or a TLS sidecar looks to pgfleet: the certificate is verified
//! (trusted via `PGFLEET_AMQP_CA_FILE`), and a worker consumes and a CLI publishes through it.

use crate::support::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A private CA and a broker certificate it signed for 127.0.0.1/localhost, made in `dir`:
/// (ca.pem, cert.pem, key.pem).
fn private_ca_and_broker_cert(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let p = |name: &str| dir.join(name);
    let openssl = |args: &[&str]| {
        let status = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl");
        assert!(status.success(), "openssl {args:?}");
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=pgfleet test CA",
        "-keyout",
        "ca-key.pem",
        "-out",
        "ca.pem",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "broker-key.pem",
        "-out",
        "broker.csr",
    ]);
    std::fs::write(
        p("broker.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "broker.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca-key.pem",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "broker.ext",
        "-out",
        "broker-cert.pem",
    ]);
    (p("ca.pem"), p("broker-cert.pem"), p("broker-key.pem"))
}

/// Accepts TLS on a free port and forwards to the plain broker; returns the port.
async fn tls_proxy(cert: &Path, key: &Path) -> u16 {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    let config = tokio_rustls::rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(client).await else {
                    return;
                };
                let Ok(mut broker) = tokio::net::TcpStream::connect("127.0.0.1:5672").await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut broker).await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_and_producers_work_over_amqps() {
    let env = TestEnv::new();
    let catalog = env.catalog().await;
    let (ca, cert, key) = private_ca_and_broker_cert(&env.dir);
    let port = tls_proxy(&cert, &key).await;
    let url = format!("amqps://guest:guest@127.0.0.1:{port}/%2f");
    let ca = ca.to_str().unwrap();

    let worker = env
        .spawn_process(
            "tls-worker",
            &["worker"],
            &[("PGFLEET_AMQP_URL", &url), ("PGFLEET_AMQP_CA_FILE", ca)],
            "consuming",
        )
        .await;
    let out = env
        .pgfleet()
        .env("PGFLEET_AMQP_URL", &url)
        .env("PGFLEET_AMQP_CA_FILE", ca)
        .args(["tenant", "create", "over-tls", "--wait"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let tenant = env
        .wait_tenant_active(&catalog, "over-tls", Duration::from_secs(30))
        .await;
    assert_eq!(tenant.schema_version, Some(1));
    let job = catalog.jobs(None, Some("over-tls"), None, 10).await.unwrap();
    assert_eq!(job.len(), 1);
    assert!(job[0].started_at.is_some());

    // The certificate is verified: without the CA the broker is not trusted.
    let out = env
        .pgfleet()
        .env("PGFLEET_AMQP_URL", &url)
        .args(["tenant", "create", "untrusted", "--json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("broker is unreachable"), "{stderr}");
    assert!(
        !stderr.contains("guest:guest"),
        "the URL's password leaked: {stderr}"
    );
    // The job it recorded is not lost: the worker's sweep publishes and runs it.
    env.wait_tenant_active(&catalog, "untrusted", Duration::from_secs(30))
        .await;
    drop(worker);
    env.cleanup().await;
}
