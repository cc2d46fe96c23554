"""Test certificates made with the `openssl` CLI: a CA and server/client certificates
signed by it (shared by test_tls.py and test_listeners.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def run(*cmd, check=True):
    return subprocess.run(cmd, check=check, capture_output=True, timeout=30)


class Pki:
    """A CA and certificates signed by it, as PEM files in `d`."""

    def __init__(self, d: Path, name="ca"):
        self.d = d
        d.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.ca_key, self.ca = d / f"{name}.key", d / f"{name}.crt"
        run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-keyout", self.ca_key, "-out", self.ca, "-days", "30",
            "-subj", f"/CN=wrenmq test {name}")

    def issue(self, stem: str, subj: str, ext: str, expired=False):
        key, csr, crt = (self.d / f"{stem}.{x}" for x in ("key", "csr", "crt"))
        extfile = self.d / f"{stem}.ext"
        extfile.write_text(ext + "\n")
        run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", key, "-out", csr, "-subj", subj)
        if expired:
            # `openssl x509` cannot back-date; `openssl ca` can.
            db = self.d / f"{stem}.db"
            db.write_text("")
            cnf = self.d / f"{stem}.cnf"
            cnf.write_text(
                "[ca]\ndefault_ca=c\n[c]\n"
                f"database={db}\nnew_certs_dir={self.d}\nserial={self.d / (stem + '.srl')}\n"
                "default_md=sha256\npolicy=p\nunique_subject=no\n[p]\ncommonName=optional\n"
                "organizationName=optional\n")
            (self.d / f"{stem}.srl").write_text("1000\n")
            run("openssl", "ca", "-batch", "-config", cnf, "-cert", self.ca, "-keyfile",
                self.ca_key, "-in", csr, "-out", crt, "-startdate", "20200101000000Z",
                "-enddate", "20200201000000Z", "-extfile", extfile, "-notext")
        else:
            run("openssl", "x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", self.ca_key,
                "-CAcreateserial", "-out", crt, "-days", "30", "-extfile", extfile)
        return crt, key

    def server(self, stem="server"):
        return self.issue(stem, "/CN=localhost",
                          "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE")

    def client(self, stem, subj, expired=False):
        return self.issue(stem, subj, "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth",
                          expired)
