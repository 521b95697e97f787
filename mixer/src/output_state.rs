//! Pure state machine of one output (RTMP or SRT, same rules): Connecting → Live, errors → Reconnecting with backoff
//! (only if the URL was ever accepted) or Failed, stall detection. It never touches GStreamer:
//! the IO side feeds it acked-byte counts and errors and carries out the effects it returns.
//!
//! An output under a destination policy is checked before every connection attempt, the first
//! and each retry (`Check`, answered with [`OutputTracker::on_check`]): a refused destination
//! is reported Failed with the reason, is not connected to, and is checked again on the normal
//! backoff, since its DNS answer may change back.

use std::time::{Duration, Instant};

use crate::control::OutputState;
use crate::retry::Backoff;

/// What the IO side must do for this output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputEffect {
    /// Report a state change.
    Report {
        state: OutputState,
        reason: Option<String>,
    },
    /// Stop the branch (block the tee pad, set elements NULL) and keep it for a restart.
    Stop,
    /// Bring the stopped branch back (PLAYING) and force a keyframe upstream.
    Restart,
    /// Check where the branch would connect (resolve and judge its host) and answer with
    /// [`OutputTracker::on_check`]; the branch stays stopped meanwhile.
    Check,
    /// Remove the branch for good.
    Teardown,
}

/// One poll of a running sink's connection counters (rtmp2sink `stats`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    /// Bytes written to the socket on this connection.
    pub written: u64,
    /// Bytes the server acknowledged (RTMP Acknowledgement) on this connection.
    pub acked: u64,
    /// The acknowledgement window the server announced: it acks every this many bytes.
    pub ack_window: u64,
}

#[derive(Debug)]
pub struct OutputTracker {
    state: OutputState,
    backoff: Backoff,
    stall_timeout: Duration,
    /// Bytes the current connection must have written before it counts as Live: more than the
    /// RTMP handshake and connect/publish commands, which also go out when a key is refused.
    live_threshold: u64,
    /// Bytes acked by connections that have ended.
    acked_before: u64,
    /// Bytes sent on the current connection (rtmp2sink restarts its stats per connection).
    acked_now: u64,
    ever_live: bool,
    attempt: u32,
    retry_at: Option<Instant>,
    last_progress: Instant,
    /// Every connection attempt waits for a destination check.
    checked: bool,
    /// A check is running; the branch is stopped until its verdict.
    checking: bool,
    /// The reason of the last refused check, while refusals go on (reported once, not per
    /// retry).
    refusal: Option<String>,
}

impl OutputTracker {
    pub fn new(
        now: Instant,
        backoff: Backoff,
        stall_timeout: Duration,
        live_threshold: u64,
    ) -> Self {
        Self {
            state: OutputState::Connecting,
            backoff,
            stall_timeout,
            live_threshold,
            acked_before: 0,
            acked_now: 0,
            ever_live: false,
            attempt: 0,
            retry_at: None,
            last_progress: now,
            checked: false,
            checking: false,
            refusal: None,
        }
    }

    /// Every connection attempt, starting with the first, waits for a destination check. The
    /// branch must start stopped and the IO side must begin the first check itself.
    pub fn checked_before_connecting(mut self) -> Self {
        self.checked = true;
        self.checking = true;
        self
    }

    pub fn state(&self) -> OutputState {
        self.state
    }

    /// Bytes sent to the server over all connections.
    pub fn bytes_sent(&self) -> u64 {
        self.acked_before + self.acked_now
    }

    /// Whether the branch is currently running and its sink's stats are worth polling.
    pub fn is_running(&self) -> bool {
        !self.checking
            && (matches!(self.state, OutputState::Connecting | OutputState::Live)
                || (self.state == OutputState::Reconnecting && self.retry_at.is_none()))
    }

    /// Periodic update with the running sink's counters (None when not running).
    ///
    /// Two ways to see a stalled server: written bytes stop advancing (the socket buffers are
    /// full; at a few Mbit/s that takes about a second, but Linux may grow a receive buffer to
    /// 32 MB, minutes of a low-bitrate mix), or the server stops acknowledging: a server that
    /// acknowledged before acks every `ack_window` bytes, so more than two windows written
    /// without an ack means it stopped reading. With nginx-rtmp's default 5 MB window that is
    /// ~32 s at 2.5 Mbit/s; a CDN with a smaller `ack_window` is watched more tightly.
    pub fn tick(&mut self, now: Instant, progress: Option<Progress>) -> Vec<OutputEffect> {
        let mut fx = Vec::new();
        if let Some(progress) = progress.filter(|_| self.is_running()) {
            let acked = progress.written.max(progress.acked);
            let unacked = progress.written.saturating_sub(progress.acked);
            if self.state == OutputState::Live
                && progress.acked > 0
                && progress.ack_window > 0
                && unacked > 2 * progress.ack_window
            {
                return self.on_error(
                    now,
                    format!(
                        "stalled: the server acknowledged nothing of the last {} KiB sent",
                        unacked / 1024
                    ),
                );
            }
            if acked > self.acked_now {
                self.acked_now = acked;
                self.last_progress = now;
                if self.state != OutputState::Live && acked >= self.live_threshold {
                    self.state = OutputState::Live;
                    self.ever_live = true;
                    self.attempt = 0;
                    fx.push(OutputEffect::Report {
                        state: OutputState::Live,
                        reason: None,
                    });
                }
            } else if self.state == OutputState::Live
                && now.saturating_duration_since(self.last_progress) >= self.stall_timeout
            {
                let stalled_for = now.saturating_duration_since(self.last_progress);
                return self.on_error(
                    now,
                    format!(
                        "stalled: the server took no data for {:.0} s",
                        stalled_for.as_secs_f64()
                    ),
                );
            }
        }
        if let Some(at) = self.retry_at {
            if now >= at {
                self.retry_at = None;
                self.last_progress = now;
                if self.checked {
                    self.checking = true;
                    fx.push(OutputEffect::Check);
                } else {
                    fx.push(OutputEffect::Restart);
                }
            }
        }
        fx
    }

    /// The verdict of the check asked for with [`OutputEffect::Check`]: connect, or stay
    /// stopped, say why (once per run of refusals) and check again after the backoff.
    pub fn on_check(&mut self, now: Instant, verdict: Result<(), String>) -> Vec<OutputEffect> {
        if !self.checking {
            // A verdict for a branch failed or removed meanwhile.
            return Vec::new();
        }
        self.checking = false;
        self.last_progress = now;
        let reason = match verdict {
            Ok(()) => {
                let mut fx = Vec::new();
                if self.refusal.take().is_some() {
                    self.state = if self.ever_live {
                        OutputState::Reconnecting
                    } else {
                        OutputState::Connecting
                    };
                    fx.push(OutputEffect::Report {
                        state: self.state,
                        reason: None,
                    });
                }
                fx.push(OutputEffect::Restart);
                return fx;
            }
            Err(reason) => reason,
        };
        let Some(delay) = self.backoff.delay(self.attempt) else {
            return self.fail(format!("gave up after {} attempts: {reason}", self.attempt));
        };
        self.attempt += 1;
        self.retry_at = Some(now + delay);
        self.state = OutputState::Failed;
        if self.refusal.as_ref() == Some(&reason) {
            return Vec::new();
        }
        self.refusal = Some(reason.clone());
        vec![OutputEffect::Report {
            state: OutputState::Failed,
            reason: Some(reason),
        }]
    }

    /// The branch's sink posted an error (or stalled).
    pub fn on_error(&mut self, now: Instant, reason: String) -> Vec<OutputEffect> {
        if !self.is_running() {
            // Late errors from a branch already stopped or failed.
            return Vec::new();
        }
        self.acked_before += self.acked_now;
        self.acked_now = 0;
        let glitch = transport_glitch(&reason) && self.attempt < FIRST_CONNECT_GLITCH_RETRIES;
        if !self.ever_live && !key_still_held(&reason) && !glitch {
            // The URL or key was never accepted: retrying will not help, say so now.
            return self.fail(reason);
        }
        match self.backoff.delay(self.attempt) {
            Some(delay) => {
                self.attempt += 1;
                self.retry_at = Some(now + delay);
                let report =
                    (self.state != OutputState::Reconnecting).then_some(OutputEffect::Report {
                        state: OutputState::Reconnecting,
                        reason: Some(reason),
                    });
                self.state = OutputState::Reconnecting;
                std::iter::once(OutputEffect::Stop).chain(report).collect()
            }
            None => self.fail(format!("gave up after {} attempts: {reason}", self.attempt)),
        }
    }

    fn fail(&mut self, reason: String) -> Vec<OutputEffect> {
        self.state = OutputState::Failed;
        self.retry_at = None;
        self.checking = false;
        vec![
            OutputEffect::Teardown,
            OutputEffect::Report {
                state: OutputState::Failed,
                reason: Some(reason),
            },
        ]
    }
}

/// Retries of a first connection cut by the network (see [`transport_glitch`]) before the
/// output is failed: with the default backoff (250 ms, 500 ms) a rejected URL is still reported
/// within a second.
const FIRST_CONNECT_GLITCH_RETRIES: u32 = 2;

/// The TCP connection was reset or timed out under the RTMP session, rather than the server
/// refusing it: a server rejecting a key or an application closes the connection during a
/// command ("'publish' cmd failed: connection closed remotely"), an absent one refuses it. A
/// reset on the very first connection happens with a healthy server too (seen with nginx-rtmp
/// right after it started), so it is retried a little before the output is called failed.
pub fn transport_glitch(reason: &str) -> bool {
    let reason = reason.to_ascii_lowercase();
    reason.contains("reset by peer")
        || reason.contains("broken pipe")
        || reason.contains("timed out")
}

/// The server refused the publish because it still holds another session of this stream key
/// ("already publishing": nginx-rtmp, and most CDNs, until they notice that an older publisher
/// is gone, e.g. after this room's mixer moved to another machine). Unlike a wrong key, that
/// clears by itself: keep retrying.
pub fn key_still_held(reason: &str) -> bool {
    let reason = reason.to_ascii_lowercase();
    reason.contains("already publishing") || reason.contains("stream already exists")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Written bytes only (a server that never acknowledged).
    fn sent(n: u64) -> Option<Progress> {
        Some(Progress {
            written: n,
            ..Progress::default()
        })
    }

    fn tracker(t0: Instant) -> OutputTracker {
        let backoff = Backoff {
            initial: ms(500),
            max: ms(2000),
            max_attempts: 2,
        };
        OutputTracker::new(t0, backoff, ms(5000), 100)
    }

    fn report(state: OutputState) -> Option<OutputState> {
        Some(state)
    }

    fn states(fx: &[OutputEffect]) -> Option<OutputState> {
        fx.iter().find_map(|e| match e {
            OutputEffect::Report { state, .. } => Some(*state),
            _ => None,
        })
    }

    #[test]
    fn never_acked_fails_fast_with_reason() {
        let t0 = Instant::now();
        let mut o = tracker(t0);
        assert!(o.tick(t0, sent(0)).is_empty());
        assert!(
            o.tick(t0, sent(99)).is_empty(),
            "handshake bytes alone are not Live"
        );
        let fx = o.on_error(t0 + ms(10), "Connection refused".into());
        assert_eq!(fx[0], OutputEffect::Teardown);
        assert_eq!(
            fx[1],
            OutputEffect::Report {
                state: OutputState::Failed,
                reason: Some("Connection refused".into())
            }
        );
        assert!(o.on_error(t0 + ms(20), "again".into()).is_empty());
    }

    #[test]
    fn a_first_connection_reset_is_retried_a_little_then_failed() {
        let t0 = Instant::now();
        let mut o = tracker(t0);
        let reset = "Connection error: Connection reset by peer (os error 104)";
        let fx = o.on_error(t0, reset.into());
        assert_eq!(states(&fx), report(OutputState::Reconnecting));
        assert_eq!(o.tick(t0 + ms(500), None), vec![OutputEffect::Restart]);
        let fx = o.on_error(t0 + ms(510), reset.into());
        assert!(fx.contains(&OutputEffect::Stop), "{fx:?}");
        assert_eq!(o.tick(t0 + ms(1510), None), vec![OutputEffect::Restart]);
        // The third reset in a row: a server that never takes the connection.
        let fx = o.on_error(t0 + ms(1520), reset.into());
        assert_eq!(states(&fx), report(OutputState::Failed));
        // A refusal by the server still fails at once.
        let mut o = tracker(t0);
        let refused = "Failed to connect: 'publish' cmd failed: connection closed remotely";
        assert!(!transport_glitch(refused));
        assert_eq!(
            states(&o.on_error(t0, refused.into())),
            report(OutputState::Failed)
        );
    }

    #[test]
    fn srt_errors_follow_the_same_rules() {
        let t0 = Instant::now();
        // srtsink after its connect timeout: nobody listening, or passphrase refused.
        let never = "Failed to write to SRT socket: Connection does not exist";
        assert!(!transport_glitch(never) && !key_still_held(never));
        let mut o = tracker(t0);
        assert_eq!(
            states(&o.on_error(t0, never.into())),
            report(OutputState::Failed)
        );
        // A listener that goes away after the output was live: reconnect.
        let mut o = tracker(t0);
        o.tick(t0, sent(200));
        let gone = "Failed to write to SRT socket: Error on SRT socket: Unknown or erroneous";
        assert_eq!(
            states(&o.on_error(t0, gone.into())),
            report(OutputState::Reconnecting)
        );
        assert_eq!(o.tick(t0 + ms(500), None), vec![OutputEffect::Restart]);
        // Still not back: each attempt fails as a never-connected one would, but retries.
        let fx = o.on_error(t0 + ms(3500), never.into());
        assert!(fx.contains(&OutputEffect::Stop), "{fx:?}");
    }

    #[test]
    fn a_key_another_session_still_holds_is_retried_not_failed() {
        let t0 = Instant::now();
        let mut o = tracker(t0);
        // rtmp2sink's words for nginx-rtmp's answer to a second publisher of one key.
        let busy = "Failed to connect: publish denied; stream already exists: { \"level\": \"error\", \
                    \"code\": \"NetStream.Publish.BadName\", \"description\": \"Already publishing\" }";
        let fx = o.on_error(t0, busy.into());
        assert_eq!(fx[0], OutputEffect::Stop);
        assert_eq!(states(&fx), report(OutputState::Reconnecting));
        // Retried after the backoff (500 ms here); once the old session is gone it goes live.
        assert!(o.tick(t0 + ms(400), None).is_empty());
        assert_eq!(o.tick(t0 + ms(500), None), vec![OutputEffect::Restart]);
        assert_eq!(
            states(&o.tick(t0 + ms(600), sent(100))),
            report(OutputState::Live)
        );
        assert!(!key_still_held("Connection refused"));
        assert!(!key_still_held(
            "publish denied: NetStream.Publish.Unauthorized"
        ));
    }

    #[test]
    fn live_output_reconnects_with_backoff_then_gives_up() {
        let t0 = Instant::now();
        let mut o = tracker(t0);
        assert_eq!(states(&o.tick(t0, sent(100))), report(OutputState::Live));
        assert!(o.tick(t0 + ms(500), sent(100)).is_empty(), "no stall yet");
        let fx = o.on_error(t0 + ms(1000), "reset".into());
        assert_eq!(fx[0], OutputEffect::Stop);
        assert_eq!(states(&fx), report(OutputState::Reconnecting));
        assert_eq!(o.bytes_sent(), 100);
        assert!(o.tick(t0 + ms(1400), None).is_empty());
        assert_eq!(o.tick(t0 + ms(1500), None), vec![OutputEffect::Restart]);
        // Server still down: the restarted branch errors again, backoff doubles.
        let fx = o.on_error(t0 + ms(1600), "refused".into());
        assert_eq!(
            fx,
            vec![OutputEffect::Stop],
            "already Reconnecting: no new report"
        );
        assert!(o.tick(t0 + ms(2500), None).is_empty());
        assert_eq!(o.tick(t0 + ms(2600), None), vec![OutputEffect::Restart]);
        let fx = o.on_error(t0 + ms(2700), "refused".into());
        assert_eq!(states(&fx), report(OutputState::Failed));
    }

    #[test]
    fn reconnect_success_goes_live_and_counts_bytes_across_connections() {
        let t0 = Instant::now();
        let mut o = tracker(t0);
        o.tick(t0, sent(1000));
        o.on_error(t0, "reset".into());
        assert_eq!(o.tick(t0 + ms(500), None), vec![OutputEffect::Restart]);
        assert_eq!(
            states(&o.tick(t0 + ms(900), sent(150))),
            report(OutputState::Live)
        );
        assert_eq!(o.bytes_sent(), 1150);
    }

    fn checked(t0: Instant) -> OutputTracker {
        tracker(t0).checked_before_connecting()
    }

    #[test]
    fn a_checked_output_connects_only_after_its_check_passes() {
        let t0 = Instant::now();
        let mut o = checked(t0);
        assert!(!o.is_running(), "stopped until the first verdict");
        assert!(
            o.tick(t0 + ms(100), sent(500)).is_empty(),
            "no stats polled"
        );
        assert!(o.on_error(t0, "late".into()).is_empty());
        assert_eq!(o.on_check(t0 + ms(10), Ok(())), vec![OutputEffect::Restart]);
        assert!(o.is_running());
        assert_eq!(
            states(&o.tick(t0 + ms(200), sent(100))),
            report(OutputState::Live)
        );
        // A live output that drops is checked again before it reconnects.
        let fx = o.on_error(t0 + ms(300), "reset".into());
        assert_eq!(fx[0], OutputEffect::Stop);
        assert_eq!(o.tick(t0 + ms(800), None), vec![OutputEffect::Check]);
        assert!(!o.is_running());
        assert_eq!(
            o.on_check(t0 + ms(810), Ok(())),
            vec![OutputEffect::Restart]
        );
        assert_eq!(o.state(), OutputState::Reconnecting);
    }

    #[test]
    fn a_refused_destination_is_failed_once_rechecked_on_the_backoff_and_may_come_back() {
        let t0 = Instant::now();
        let mut o =
            OutputTracker::new(t0, Backoff::default(), ms(5000), 100).checked_before_connecting();
        let loopback = || Err("the host now resolves to 127.0.0.1 (loopback)".to_string());
        let fx = o.on_check(t0, loopback());
        assert_eq!(
            fx,
            vec![OutputEffect::Report {
                state: OutputState::Failed,
                reason: loopback().err()
            }],
            "no Restart: nothing connects"
        );
        assert!(!o.is_running());
        // Checked again after 250 ms, 500 ms, 1 s, ...; the same refusal is not re-reported.
        assert!(o.tick(t0 + ms(249), None).is_empty());
        assert_eq!(o.tick(t0 + ms(250), None), vec![OutputEffect::Check]);
        assert!(o.on_check(t0 + ms(260), loopback()).is_empty());
        assert_eq!(o.tick(t0 + ms(760), None), vec![OutputEffect::Check]);
        // Another internal address is news.
        let other = Err("the host now resolves to 169.254.169.254 (link-local)".to_string());
        assert_eq!(
            states(&o.on_check(t0 + ms(770), other)),
            report(OutputState::Failed)
        );
        // DNS changed back: connecting again, and live once the server takes the stream.
        assert_eq!(o.tick(t0 + ms(1770), None), vec![OutputEffect::Check]);
        let fx = o.on_check(t0 + ms(1780), Ok(()));
        assert_eq!(
            fx,
            vec![
                OutputEffect::Report {
                    state: OutputState::Connecting,
                    reason: None
                },
                OutputEffect::Restart
            ]
        );
        assert_eq!(
            states(&o.tick(t0 + ms(1900), sent(100))),
            report(OutputState::Live)
        );
    }

    #[test]
    fn refusals_give_up_after_the_backoff_runs_out() {
        let t0 = Instant::now();
        let mut o = checked(t0); // two attempts
        let refused = || Err("refused at connect time: private".to_string());
        o.on_check(t0, refused());
        assert_eq!(o.tick(t0 + ms(500), None), vec![OutputEffect::Check]);
        o.on_check(t0 + ms(500), refused());
        assert_eq!(o.tick(t0 + ms(1500), None), vec![OutputEffect::Check]);
        let fx = o.on_check(t0 + ms(1500), refused());
        assert_eq!(fx[0], OutputEffect::Teardown);
        assert_eq!(states(&fx), report(OutputState::Failed));
        assert!(o.tick(t0 + ms(5000), None).is_empty(), "no more checks");
        assert!(
            o.on_check(t0 + ms(5000), Ok(())).is_empty(),
            "a late verdict"
        );
    }

    #[test]
    fn stalled_live_output_is_treated_as_an_error() {
        let t0 = Instant::now();
        let mut o = tracker(t0);
        o.tick(t0, sent(200));
        assert!(o.tick(t0 + ms(4900), sent(200)).is_empty());
        let fx = o.tick(t0 + ms(5000), sent(200));
        assert_eq!(fx[0], OutputEffect::Stop);
    }

    #[test]
    fn a_server_that_stops_acknowledging_is_stalled_before_the_buffers_fill() {
        let t0 = Instant::now();
        let mut o = tracker(t0);
        let p = |written, acked| {
            Some(Progress {
                written,
                acked,
                ack_window: 1000,
            })
        };
        o.tick(t0, p(500, 0));
        assert_eq!(o.state(), OutputState::Live);
        // Never acked on this connection: no ack-based verdict (some servers never ack).
        assert!(o.tick(t0 + ms(100), p(5000, 0)).is_empty());
        assert!(
            o.tick(t0 + ms(200), p(5500, 4000)).is_empty(),
            "acks keep up"
        );
        assert!(
            o.tick(t0 + ms(300), p(6000, 4000)).is_empty(),
            "two windows not yet"
        );
        let fx = o.tick(t0 + ms(400), p(6001, 4000));
        assert_eq!(fx[0], OutputEffect::Stop);
        assert_eq!(states(&fx), report(OutputState::Reconnecting));
    }
}
