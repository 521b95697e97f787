//! The connect-time destination check of one output (IO): resolves the URL's host on a helper
//! thread, bounded in time, and judges the answer with the pure [`DestinationPolicy`]. The
//! output's state machine asks for a check before every connection attempt (first start and
//! each retry, see `output_state`); its branch stays stopped until the verdict.
//!
//! Time of check and time of use: `rtmp2sink` resolves the host again by itself when it
//! connects (`g_network_address_new` + `g_socket_client_connect_async` in GStreamer's
//! `rtmpclient.c`, and again when Adobe authentication makes it reconnect), through GLib's
//! resolver; nothing here hands it the addresses that were checked. The check therefore
//! catches a name whose DNS answer changed since the output was added (a rebinding with any
//! TTL longer than the ~50 ms between this lookup and the sink's), but a DNS server that
//! answers each query differently (TTL 0, public address first, `127.0.0.1` second) still
//! wins the race. Pinning the checked address into the URL would close it but breaks
//! `tcUrl`/vhost routing and TLS names on CDNs; the way to close it without that is to check
//! inside the lookup the sink itself makes (a process-wide `GResolver` installed with
//! `g_resolver_set_default` that applies the policy to every answer), not done yet.

use std::io;
use std::net::{IpAddr, ToSocketAddrs};
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::time::{Duration, Instant};

use crate::destination::{ConnectTarget, DestinationPolicy};

/// How long a lookup may take before the attempt counts as refused (the output retries on its
/// normal backoff). The same bound serve's API uses when the output is added.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);

type Answer = io::Result<Vec<IpAddr>>;

/// The check of one output's destination, kept across attempts.
#[derive(Debug)]
pub struct ConnectCheck {
    policy: DestinationPolicy,
    target: ConnectTarget,
    pending: Option<Pending>,
}

/// A lookup asked for and not yet judged.
#[derive(Debug)]
enum Pending {
    /// Known without a lookup; handed out at the next poll.
    Decided(Result<(), String>),
    /// A lookup thread is running. After `deadline` the attempt is refused, but the thread is
    /// kept (`judged`): the next attempt waits for that same lookup rather than starting
    /// another, so a DNS server that never answers costs one thread per output, not one per
    /// retry.
    Resolving {
        answer: Receiver<Answer>,
        deadline: Instant,
        judged: bool,
    },
}

impl ConnectCheck {
    /// The check for `url` under `policy`; `None` when no connection to it can ever be
    /// refused (private destinations allowed, or the host on the allow-list).
    pub fn new(policy: DestinationPolicy, url: &str) -> Option<ConnectCheck> {
        let target = policy.connect_target(url);
        (target != ConnectTarget::Allowed).then_some(ConnectCheck {
            policy,
            target,
            pending: None,
        })
    }

    /// Starts checking for the next connection attempt; [`ConnectCheck::poll`] gives the
    /// verdict.
    pub fn begin(&mut self, now: Instant) {
        if let Some(Pending::Resolving {
            deadline, judged, ..
        }) = &mut self.pending
        {
            // The previous lookup is still running: its answer serves this attempt.
            *deadline = now + RESOLVE_TIMEOUT;
            *judged = false;
            return;
        }
        self.pending = Some(match &self.target {
            ConnectTarget::Allowed => Pending::Decided(Ok(())),
            ConnectTarget::Decided(verdict) => Pending::Decided(verdict.clone()),
            ConnectTarget::Resolve { host, port } => match spawn_lookup(host.clone(), *port) {
                Ok(answer) => Pending::Resolving {
                    answer,
                    deadline: now + RESOLVE_TIMEOUT,
                    judged: false,
                },
                Err(e) => Pending::Decided(Err(format!(
                    "refused at connect time: cannot resolve the host ({e})"
                ))),
            },
        });
    }

    /// The verdict on the attempt begun last, once known (`Err`: do not connect, and why).
    pub fn poll(&mut self, now: Instant) -> Option<Result<(), String>> {
        match self.pending.as_mut()? {
            Pending::Decided(_) => match self.pending.take() {
                Some(Pending::Decided(verdict)) => Some(verdict),
                _ => None,
            },
            Pending::Resolving {
                answer,
                deadline,
                judged,
            } => {
                let received = answer.try_recv();
                let already = *judged;
                match received {
                    Err(TryRecvError::Empty) if !already && now >= *deadline => {
                        *judged = true;
                        Some(Err(format!(
                            "refused at connect time: the host did not resolve within {} s",
                            RESOLVE_TIMEOUT.as_secs()
                        )))
                    }
                    Err(TryRecvError::Empty) => None,
                    Ok(lookup) => {
                        self.pending = None;
                        (!already).then(|| self.judge(lookup.map_err(|e| e.to_string())))
                    }
                    Err(TryRecvError::Disconnected) => {
                        self.pending = None;
                        (!already).then(|| self.judge(Err("the lookup thread ended".into())))
                    }
                }
            }
        }
    }

    fn judge(&self, lookup: Result<Vec<IpAddr>, String>) -> Result<(), String> {
        match &self.target {
            ConnectTarget::Resolve { host, .. } => {
                let verdict = self.policy.judge_resolved(host, lookup);
                if let Err(reason) = &verdict {
                    tracing::warn!(%host, %reason, "output destination refused");
                }
                verdict
            }
            ConnectTarget::Decided(verdict) => verdict.clone(),
            ConnectTarget::Allowed => Ok(()),
        }
    }
}

/// Resolves `host` with the system resolver (`getaddrinfo`, as GLib's resolver does) on its own
/// thread: it can block for seconds and must not hold up the mixer's watcher or a streaming
/// thread.
fn spawn_lookup(host: String, port: u16) -> io::Result<Receiver<Answer>> {
    let (tx, rx) = mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("output-resolve".into())
        .spawn(move || {
            let answer = (host.as_str(), port)
                .to_socket_addrs()
                .map(|addrs| addrs.map(|a| a.ip()).collect());
            let _ = tx.send(answer);
        })?;
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use costream_testkit::wait_for;

    fn strict() -> DestinationPolicy {
        DestinationPolicy::default()
    }

    #[test]
    fn nothing_to_check_when_private_destinations_are_allowed() {
        assert!(
            ConnectCheck::new(DestinationPolicy::unrestricted(), "rtmp://localhost/a/k").is_none()
        );
        assert!(ConnectCheck::new(strict(), "rtmp://cdn.example/a/k").is_some());
    }

    #[test]
    fn a_literal_is_judged_without_a_lookup_on_every_attempt() {
        let mut check = ConnectCheck::new(strict(), "rtmp://10.1.2.3/a/k").unwrap();
        let now = Instant::now();
        assert_eq!(check.poll(now), None, "nothing asked yet");
        for _ in 0..2 {
            check.begin(now);
            let verdict = check.poll(now).expect("decided at once");
            assert!(verdict.unwrap_err().contains("10.1.2.3 (private)"));
            assert_eq!(check.poll(now), None, "one verdict per attempt");
        }
    }

    #[test]
    fn a_name_resolving_to_loopback_is_refused_with_the_address() {
        // `localhost` resolves through /etc/hosts: no network needed.
        let mut check = ConnectCheck::new(strict(), "rtmp://localhost:1935/live/key").unwrap();
        check.begin(Instant::now());
        let verdict = wait_for(Instant::now() + Duration::from_secs(5), || {
            check.poll(Instant::now())
        })
        .expect("a verdict");
        let reason = verdict.unwrap_err();
        assert!(
            reason.contains("now resolves to") && reason.contains("(loopback)"),
            "{reason}"
        );
        assert!(!reason.contains("key"), "{reason}");
    }

    #[test]
    fn a_lookup_past_its_deadline_is_refused_once_and_reused_by_the_next_attempt() {
        let (_tx, rx) = mpsc::sync_channel::<Answer>(1);
        let t0 = Instant::now();
        let mut check = ConnectCheck {
            policy: strict(),
            target: ConnectTarget::Resolve {
                host: "slow.example".into(),
                port: 1935,
            },
            pending: Some(Pending::Resolving {
                answer: rx,
                deadline: t0 + RESOLVE_TIMEOUT,
                judged: false,
            }),
        };
        assert_eq!(check.poll(t0), None);
        let late = check.poll(t0 + RESOLVE_TIMEOUT).expect("timed out");
        assert!(late.unwrap_err().contains("did not resolve within 3 s"));
        assert_eq!(check.poll(t0 + RESOLVE_TIMEOUT * 2), None, "judged once");
        // The next attempt waits for the same lookup, with a fresh deadline.
        check.begin(t0 + RESOLVE_TIMEOUT * 2);
        assert!(matches!(
            check.pending,
            Some(Pending::Resolving { judged: false, .. })
        ));
        assert_eq!(check.poll(t0 + RESOLVE_TIMEOUT * 2), None);
    }
}
