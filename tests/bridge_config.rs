//! A bridge that cannot run (its TLS files unreadable) is refused at start-up with a clear
//! message instead of running without its uplink (issue 14).

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Starts wrenmq on `text` (`{dir}` replaced by a fresh directory); it must exit with 1.
/// Returns its stderr and the configuration file.
fn refused(name: &str, text: &str) -> (String, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("wrenmq-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("w.conf");
    std::fs::write(&conf, text.replace("{dir}", &dir.display().to_string())).unwrap();
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
            panic!("wrenmq started with a bridge it cannot run");
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
    (stderr, conf)
}

#[test]
fn bridge_with_an_unreadable_cafile_is_refused_at_start_up() {
    let (stderr, conf) = refused(
        "bridge-cafile",
        "listener 0 127.0.0.1\npersistence false\n\
         connection cloud\naddress 127.0.0.1:1\ntopic sensors/# out 1\n\
         bridge_cafile {dir}/missing-ca.pem\n",
    );
    assert!(
        stderr.contains(&format!(
            "{}:3: connection: cannot read: bridge cloud TLS: cafile",
            conf.display()
        )) && stderr.contains("missing-ca.pem"),
        "{stderr}"
    );
}
