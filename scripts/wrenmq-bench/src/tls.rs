//! TLS for the load generator: with `WRENMQ_BENCH_TLS_CA=ca.pem` every connection of every
//! scenario is a rustls client session checked against that CA (server name `localhost`
//! unless `WRENMQ_BENCH_TLS_NAME` says otherwise), so `fanin`, `conns` etc. measure the
//! broker over TLS; `handshakes` measures how fast new TLS clients get their CONNACK.

use std::io::{self, Read};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

use crate::{addr, prefix, Args, CpuMeter, Line, Net};

type Setup = Option<(Arc<ClientConfig>, ServerName<'static>)>;

fn setup() -> Result<&'static Setup, String> {
    static SETUP: OnceLock<Result<Setup, String>> = OnceLock::new();
    SETUP
        .get_or_init(|| {
            let Ok(ca) = std::env::var("WRENMQ_BENCH_TLS_CA") else {
                return Ok(None);
            };
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(&ca).map_err(|e| format!("{ca}: {e}"))? {
                roots
                    .add(cert.map_err(|e| format!("{ca}: {e}"))?)
                    .map_err(|e| format!("{ca}: {e}"))?;
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth();
            let name = std::env::var("WRENMQ_BENCH_TLS_NAME").unwrap_or("localhost".into());
            let name = ServerName::try_from(name).map_err(|e| e.to_string())?;
            Ok(Some((Arc::new(config), name)))
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// A new client session, or `None` without `WRENMQ_BENCH_TLS_CA`.
pub fn client() -> Result<Option<Box<ClientConnection>>, String> {
    let Some((config, name)) = setup()? else {
        return Ok(None);
    };
    let mut c =
        ClientConnection::new(Arc::clone(config), name.clone()).map_err(|e| format!("TLS: {e}"))?;
    c.set_buffer_limit(None);
    Ok(Some(Box::new(c)))
}

/// Feeds socket bytes to the session; `plain` is replaced by what they decrypt to.
pub fn decrypt(t: &mut ClientConnection, mut input: &[u8], plain: &mut Vec<u8>) -> io::Result<()> {
    plain.clear();
    while !input.is_empty() {
        t.read_tls(&mut input)?;
        let state = t
            .process_new_packets()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let n = state.plaintext_bytes_to_read();
        let start = plain.len();
        plain.resize(start + n, 0);
        t.reader().read_exact(&mut plain[start..])?;
    }
    Ok(())
}

/// `handshakes`: opens `--count` TLS connections, `--concurrency` at a time, each
/// finished when its CONNACK arrives; reports handshakes per second.
pub fn handshakes(args: &Args, line: &mut Line) -> Result<(), String> {
    if setup()?.is_none() {
        return Err("set WRENMQ_BENCH_TLS_CA to the broker's CA certificate".into());
    }
    let count: usize = args.num("count", 500)?;
    let concurrency: usize = args.num("concurrency", 16)?;
    let pid = args.opts.get("pid").cloned();
    let mut net = Net::new(addr(args)?).map_err(|e| e.to_string())?;
    let cpu = CpuMeter::start(&pid);
    let start = Instant::now();
    net.open(
        count,
        &prefix("h"),
        60,
        concurrency,
        Instant::now() + Duration::from_secs(120),
    )?;
    let took = start.elapsed().as_secs_f64();
    line.kv("count", count)
        .kv("concurrency", concurrency)
        .f("setup_s", took)
        .f("handshakes_per_s", count as f64 / took.max(1e-9));
    cpu.finish(line);
    Ok(())
}
