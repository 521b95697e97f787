//! A private nginx-rtmp per test: its own conf, ports, pid and logs in a tempdir, killed on drop.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// A running nginx with the RTMP module: `application live` accepts any stream key,
/// `application locked` refuses every publisher through an `on_publish` callback answering 403
/// (a CDN rejecting a stream key), `application rec` records every publish session to its own
/// FLV file, and `/stat` on the HTTP port shows publishers.
pub struct Nginx {
    child: Child,
    dir: tempfile::TempDir,
    /// RTMP listen port on 127.0.0.1.
    pub rtmp_port: u16,
    /// HTTP port on 127.0.0.1 serving `/stat`.
    pub http_port: u16,
}

/// How a test's nginx differs from the default one.
#[derive(Debug, Clone, Default)]
pub struct NginxOptions {
    /// RTMP also listens on this address (e.g. the host end of a network namespace's link).
    pub also_listen: Option<std::net::IpAddr>,
    /// `drop_idle_publisher` of `application live`: a publisher that sends nothing for this long
    /// is dropped (as CDN edges do), freeing its key. Off by default, like nginx.
    pub drop_idle_publisher: Option<Duration>,
}

impl Nginx {
    /// Writes a conf, spawns `nginx -c conf -p dir` in the foreground, waits (10 s at most)
    /// until the RTMP port accepts connections.
    pub fn start() -> anyhow::Result<Nginx> {
        Self::start_with(&NginxOptions::default())
    }

    pub fn start_with(options: &NginxOptions) -> anyhow::Result<Nginx> {
        let dir = tempfile::tempdir().context("tempdir for nginx")?;
        let rtmp_port = crate::free_port()?;
        let http_port = crate::free_port()?;
        let conf = conf_text(dir.path(), rtmp_port, http_port, options);
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        std::fs::create_dir_all(dir.path().join("logs"))?;
        std::fs::create_dir_all(dir.path().join("rec"))?;
        let child = spawn(dir.path())?;
        let mut nginx = Nginx {
            child,
            dir,
            rtmp_port,
            http_port,
        };
        nginx.wait_ready()?;
        Ok(nginx)
    }

    /// FLV files `application rec` wrote for stream `key`, oldest first (one per publish).
    pub fn recordings(&self, key: &str) -> Vec<std::path::PathBuf> {
        let mut files: Vec<_> = std::fs::read_dir(self.dir.path().join("rec"))
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| {
                        p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.starts_with(&format!("{key}-")))
                    })
                    .collect()
            })
            .unwrap_or_default();
        // record_unique appends the publish time, so names sort in publish order.
        files.sort();
        files
    }

    /// Kills nginx and starts it again on the same ports (publishers are cut off, as when a
    /// CDN edge restarts).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.child = spawn(self.dir.path())?;
        self.wait_ready()
    }

    /// Freezes nginx (SIGSTOP): connections stay open but nothing is read or acknowledged, as
    /// with a stalled CDN edge. [`Nginx::resume`] undoes it.
    pub fn pause(&self) -> anyhow::Result<()> {
        self.kill_signal("STOP")
    }

    /// SIGCONT after [`Nginx::pause`].
    pub fn resume(&self) -> anyhow::Result<()> {
        self.kill_signal("CONT")
    }

    fn kill_signal(&self, name: &str) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()?;
        if !status.success() {
            bail!("kill -{name} nginx failed");
        }
        Ok(())
    }

    /// `rtmp://127.0.0.1:<port>/<app>/<key>`
    pub fn rtmp_app_url(&self, app: &str, key: &str) -> String {
        format!("rtmp://127.0.0.1:{}/{app}/{key}", self.rtmp_port)
    }

    /// Kills nginx (ports stop accepting) without dropping the handle.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if TcpStream::connect(("127.0.0.1", self.rtmp_port)).is_ok() {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                let mut err = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                bail!("nginx exited early ({status}): {err}{}", self.error_log());
            }
            if Instant::now() > deadline {
                bail!(
                    "nginx did not accept on 127.0.0.1:{} within 10 s",
                    self.rtmp_port
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `rtmp://127.0.0.1:<port>/live/<key>`
    pub fn rtmp_url(&self, key: &str) -> String {
        format!("rtmp://127.0.0.1:{}/live/{key}", self.rtmp_port)
    }

    /// The raw XML from `GET /stat`.
    pub fn stat_xml(&self) -> anyhow::Result<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.http_port))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.write_all(b"GET /stat HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
        let mut resp = String::new();
        stream.read_to_string(&mut resp)?;
        let (head, body) = resp
            .split_once("\r\n\r\n")
            .context("HTTP response without header end")?;
        if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
            bail!("GET /stat: {}", head.lines().next().unwrap_or(""));
        }
        Ok(body.to_string())
    }

    /// Bytes nginx has received from the publisher of `key`, if one is publishing.
    pub fn publisher_bytes_in(&self, key: &str) -> Option<u64> {
        parse_publisher_bytes_in(&self.stat_xml().ok()?, key)
    }

    /// The nginx client ids of the publishers of `key` (one at most while nginx-rtmp refuses a
    /// second publisher with "already publishing"; each reconnect gets a new id).
    pub fn publisher_ids(&self, key: &str) -> Vec<u64> {
        self.stat_xml()
            .map(|xml| parse_publisher_ids(&xml, key))
            .unwrap_or_default()
    }

    /// nginx's error log so far (for test failure messages).
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // A paused nginx cannot die of SIGKILL until it runs again; harmless otherwise.
        let _ = self.resume();
        self.stop();
    }
}

fn spawn(dir: &Path) -> anyhow::Result<Child> {
    Command::new("nginx")
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .arg("-p")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawn nginx (is it installed?)")
}

fn conf_text(dir: &Path, rtmp_port: u16, http_port: u16, options: &NginxOptions) -> String {
    let d = dir.display();
    let also_listen = options
        .also_listen
        .map(|ip| format!("listen {ip}:{rtmp_port};"))
        .unwrap_or_default();
    let drop_idle = options
        .drop_idle_publisher
        .map(|d| format!("drop_idle_publisher {}ms;", d.as_millis()))
        .unwrap_or_default();
    format!(
        r#"load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;
daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 256; }}
rtmp {{
    server {{
        listen 127.0.0.1:{rtmp_port};
        {also_listen}
        chunk_size 4096;
        # Acknowledge every 256 KB instead of nginx's 5 MB: like a CDN edge that acks often,
        # so the stall test sees missing acknowledgements within seconds (see OutputTracker).
        ack_window 262144;
        application live {{
            live on;
            record off;
            wait_key on;
            {drop_idle}
        }}
        application rec {{
            live on;
            record all;
            record_path {d}/rec;
            record_unique on;
        }}
        application locked {{
            live on;
            record off;
            on_publish http://127.0.0.1:{http_port}/deny;
        }}
    }}
}}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{http_port};
        location /stat {{ rtmp_stat all; }}
        location /deny {{ return 403; }}
    }}
}}
"#
    )
}

/// Finds `<stream><name>key</name>…<bytes_in>N</bytes_in>` in rtmp_stat XML. A hand-rolled
/// scan is enough for this fixed, machine-written format.
fn parse_publisher_bytes_in(xml: &str, key: &str) -> Option<u64> {
    for stream in xml.split("<stream>").skip(1) {
        let stream = stream.split("</stream>").next()?;
        if tag(stream, "name")? != key {
            continue;
        }
        if !stream.contains("<publishing/>") {
            return None;
        }
        // The stream's own bytes_in comes before its <client> entries.
        return tag(stream, "bytes_in")?.parse().ok();
    }
    None
}

fn parse_publisher_ids(xml: &str, key: &str) -> Vec<u64> {
    let mut ids = Vec::new();
    for stream in xml.split("<stream>").skip(1) {
        let Some(stream) = stream.split("</stream>").next() else {
            continue;
        };
        if tag(stream, "name") != Some(key) {
            continue;
        }
        for client in stream.split("<client>").skip(1) {
            let client = client.split("</client>").next().unwrap_or("");
            if client.contains("<publishing/>") {
                if let Some(id) = tag(client, "id").and_then(|id| id.parse().ok()) {
                    ids.push(id);
                }
            }
        }
    }
    ids
}

fn tag<'a>(s: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = s.find(&open)? + open.len();
    let len = s[start..].find(&close)?;
    Some(&s[start..start + len])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bytes_in_of_the_named_stream() {
        let xml = "<rtmp><server><application><name>live</name><live>\
            <stream><name>other</name><bytes_in>5</bytes_in><publishing/></stream>\
            <stream><name>k1</name><time>1</time><bytes_in>1234</bytes_in><bytes_out>0</bytes_out>\
            <client><id>1</id><bytes_in>99</bytes_in><publishing/></client><publishing/><active/></stream>\
            </live></application></server></rtmp>";
        assert_eq!(parse_publisher_bytes_in(xml, "k1"), Some(1234));
        assert_eq!(parse_publisher_bytes_in(xml, "other"), Some(5));
        assert_eq!(parse_publisher_bytes_in(xml, "missing"), None);
        assert_eq!(parse_publisher_ids(xml, "k1"), vec![1]);
        assert!(parse_publisher_ids(xml, "other").is_empty());
    }
}
