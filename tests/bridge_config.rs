//! A bridge the loop cannot run yet (a host name to resolve; TLS) is refused at start-up
//! with a clear message instead of running without its uplink (issue 14).

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn bridge_with_a_host_name_is_refused_with_a_clear_message() {
    let dir = std::env::temp_dir().join(format!("wrenmq-bridge-conf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("w.conf");
    std::fs::write(
        &conf,
        "listener 0 127.0.0.1\npersistence false\n\
         connection cloud\naddress broker.example.invalid:1883\ntopic sensors/# out 1\n",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_wrenmq"))
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("wrenmq started with a bridge configured");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}:3: connection: not supported: bridge addresses must be IP addresses",
            conf.display()
        )),
        "{stderr}"
    );
}
