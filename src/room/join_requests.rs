//! Viewers asking to join the co-stream (连麦 apply → approve): the requests of one room, the
//! host's settings for them, and what each viewer is told. Pure bookkeeping with a clock passed
//! in; the API turns it into HTTP and Server-Sent Events.
//!
//! A request carries no token: the viewer holds a random secret that lets it follow (and
//! withdraw) its own request, and gets a personal guest token only when the host accepts.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde::Serialize;
use subtle::ConstantTimeEq;
use tokio::sync::watch;

/// A request nobody answered is dropped after this long (the viewer is told).
pub const REQUEST_TTL: Duration = Duration::from_secs(120);
/// Requests waiting at once in one room: a flood cannot bury the host's list.
pub const MAX_PENDING: usize = 50;
/// Requests waiting at once from one client (an IPv4 address or an IPv6 /64).
pub const MAX_PENDING_PER_CLIENT: usize = 2;
/// After a decline or a removal, the same address may not ask again for this long.
pub const COOLDOWN: Duration = Duration::from_secs(60);
/// Addresses remembered for the cool-down (oldest forgotten first).
const MAX_COOLDOWNS: usize = 1024;
/// A viewer's name as shown to the host.
pub const MAX_NAME_CHARS: usize = 64;

/// What the host decided (or time did), as the viewer's event stream tells it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Outcome {
    Pending,
    /// The viewer's personal guest token: it joins with it as `identity`.
    Accepted {
        identity: String,
        token: String,
        expires_at: u64,
    },
    Declined {
        reason: String,
    },
    Expired,
    Withdrawn,
}

/// The host's settings for requests in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct RequestSettings {
    /// Viewers may ask to join.
    pub enabled: bool,
    /// Guests on air at most (accepts beyond it are refused); `None`: the room's own limit.
    pub max_guests: Option<u32>,
}

impl Default for RequestSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            max_guests: None,
        }
    }
}

/// One waiting request, as the host sees it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct PendingRequest {
    pub request_id: String,
    pub name: String,
    /// Seconds since the viewer asked.
    pub waiting_secs: f64,
}

/// Why a request or a decision was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("the host does not take requests to join right now")]
    Off,
    #[error("the host has {MAX_PENDING} requests waiting already; try again in a minute")]
    TooMany,
    #[error("this address asked recently and was declined or removed; try again in {0} s")]
    CoolingDown(u64),
    #[error("{MAX_PENDING_PER_CLIENT} requests from this address are waiting already; wait for the host's answer")]
    AlreadyWaiting,
    #[error("a name is required (1–{MAX_NAME_CHARS} characters)")]
    BadName,
    #[error("no request {0} waiting in this room (answered, expired or withdrawn)")]
    NotPending(String),
    #[error("no request {0} in this room")]
    Unknown(String),
    #[error("wrong secret for this request")]
    BadSecret,
}

struct Request {
    name: String,
    secret: String,
    asked_at: Instant,
    from: IpAddr,
    outcome: watch::Sender<Outcome>,
}

impl Request {
    fn is_pending(&self) -> bool {
        *self.outcome.borrow() == Outcome::Pending
    }
}

#[derive(Default)]
pub struct JoinRequests {
    settings: RequestSettings,
    requests: BTreeMap<String, Request>,
    cooldowns: HashMap<IpAddr, Instant>,
    /// Where each accepted viewer asked from (newest kept, at most [`MAX_COOLDOWNS`]), so a
    /// removal long after the request still cools that client down.
    accepted_from: VecDeque<(String, IpAddr)>,
}

impl JoinRequests {
    pub fn settings(&self) -> RequestSettings {
        self.settings
    }

    /// New settings; turning requests off declines those waiting.
    pub fn set_settings(&mut self, settings: RequestSettings) {
        self.settings = settings;
        if !settings.enabled {
            let waiting: Vec<String> = self.pending_ids();
            for id in waiting {
                self.close(
                    &id,
                    Outcome::Declined {
                        reason: "the host stopped taking requests".into(),
                    },
                );
            }
        }
    }

    /// A viewer at `from` asks to join as `name` under `request_id`, followed with `secret`;
    /// returns the name as the host will see it.
    pub fn ask(
        &mut self,
        now: Instant,
        from: IpAddr,
        name: &str,
        request_id: String,
        secret: String,
    ) -> Result<String, RequestError> {
        self.expire(now);
        if !self.settings.enabled {
            return Err(RequestError::Off);
        }
        let name: String = name.trim().chars().filter(|c| !c.is_control()).collect();
        if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
            return Err(RequestError::BadName);
        }
        let from = crate::per_ip::client_key(from);
        if let Some(until) = self.cooldowns.get(&from).filter(|until| **until > now) {
            let left = until.saturating_duration_since(now).as_secs().max(1);
            return Err(RequestError::CoolingDown(left));
        }
        let waiting: Vec<&Request> = self.waiting().map(|(_, r)| r).collect();
        if waiting.len() >= MAX_PENDING {
            return Err(RequestError::TooMany);
        }
        if waiting.iter().filter(|r| r.from == from).count() >= MAX_PENDING_PER_CLIENT {
            return Err(RequestError::AlreadyWaiting);
        }
        let (outcome, _) = watch::channel(Outcome::Pending);
        self.requests.insert(
            request_id,
            Request {
                name: name.clone(),
                secret,
                asked_at: now,
                from,
                outcome,
            },
        );
        Ok(name)
    }

    /// The viewer's view of its request: checked against its secret.
    pub fn follow(
        &mut self,
        now: Instant,
        request_id: &str,
        secret: &str,
    ) -> Result<(watch::Receiver<Outcome>, Instant), RequestError> {
        self.expire(now);
        let request = self.authorized(request_id, secret)?;
        Ok((request.outcome.subscribe(), request.asked_at + REQUEST_TTL))
    }

    /// The viewer gives up waiting (or leaves the page); an answered request stays answered.
    pub fn withdraw(
        &mut self,
        now: Instant,
        request_id: &str,
        secret: &str,
    ) -> Result<(), RequestError> {
        self.expire(now);
        let request = self.authorized(request_id, secret)?;
        if !request.is_pending() {
            return Err(RequestError::NotPending(request_id.to_string()));
        }
        self.close(request_id, Outcome::Withdrawn);
        Ok(())
    }

    /// Identities handed out by accepts whose requests are still remembered (viewers on their
    /// way on air, or there already): the cap on guests counts them.
    pub fn accepted_identities(&self) -> Vec<String> {
        self.requests
            .values()
            .filter_map(|r| match &*r.outcome.borrow() {
                Outcome::Accepted { identity, .. } => Some(identity.clone()),
                _ => None,
            })
            .collect()
    }

    /// The host accepts: `mint` makes the personal token (identity, token, expiry) for the
    /// viewer's name. Returns the identity.
    pub fn accept(
        &mut self,
        now: Instant,
        request_id: &str,
        mint: impl FnOnce(&str) -> (String, String, u64),
    ) -> Result<String, RequestError> {
        let (name, from) = {
            let request = self.pending(now, request_id)?;
            (request.name.clone(), request.from)
        };
        let (identity, token, expires_at) = mint(&name);
        self.accepted_from.push_back((identity.clone(), from));
        while self.accepted_from.len() > MAX_COOLDOWNS {
            self.accepted_from.pop_front();
        }
        self.close(
            request_id,
            Outcome::Accepted {
                identity: identity.clone(),
                token,
                expires_at,
            },
        );
        Ok(identity)
    }

    /// The host declines; the viewer's address waits [`COOLDOWN`] before asking again.
    pub fn decline(&mut self, now: Instant, request_id: &str) -> Result<(), RequestError> {
        let from = self.pending(now, request_id)?.from;
        self.close(
            request_id,
            Outcome::Declined {
                reason: "the host declined".into(),
            },
        );
        self.cool_down(now, from);
        Ok(())
    }

    /// The host removed the guest this request let in: its address cools down too.
    pub fn removed(&mut self, now: Instant, identity: &str) {
        let from = self
            .accepted_from
            .iter()
            .find(|(i, _)| i == identity)
            .map(|(_, from)| *from);
        if let Some(from) = from {
            self.cool_down(now, from);
        }
    }

    /// The requests waiting, oldest first.
    pub fn pending_list(&mut self, now: Instant) -> Vec<PendingRequest> {
        self.expire(now);
        let mut list: Vec<PendingRequest> = self
            .waiting()
            .map(|(id, r)| PendingRequest {
                request_id: id.clone(),
                name: r.name.clone(),
                waiting_secs: (now.saturating_duration_since(r.asked_at).as_secs_f64() * 10.0)
                    .round()
                    / 10.0,
            })
            .collect();
        list.sort_by(|a, b| b.waiting_secs.total_cmp(&a.waiting_secs));
        list
    }

    /// Pending requests older than [`REQUEST_TTL`] expire; answered ones are forgotten once
    /// their viewer had the time to read the answer.
    pub fn expire(&mut self, now: Instant) {
        let expired: Vec<String> = self
            .requests
            .iter()
            .filter(|(_, r)| now.saturating_duration_since(r.asked_at) >= REQUEST_TTL)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &expired {
            if let Some(request) = self.requests.get(id) {
                request.outcome.send_if_modified(|outcome| {
                    let pending = *outcome == Outcome::Pending;
                    if pending {
                        *outcome = Outcome::Expired;
                    }
                    pending
                });
            }
        }
        self.requests
            .retain(|_, r| now.saturating_duration_since(r.asked_at) < REQUEST_TTL * 2);
        self.cooldowns.retain(|_, until| *until > now);
    }

    /// The requests still waiting for an answer.
    fn waiting(&self) -> impl Iterator<Item = (&String, &Request)> {
        self.requests.iter().filter(|(_, r)| r.is_pending())
    }

    fn pending_ids(&self) -> Vec<String> {
        self.waiting().map(|(id, _)| id.clone()).collect()
    }

    fn pending(&mut self, now: Instant, request_id: &str) -> Result<&Request, RequestError> {
        self.expire(now);
        match self.requests.get(request_id) {
            Some(r) if r.is_pending() => Ok(r),
            _ => Err(RequestError::NotPending(request_id.to_string())),
        }
    }

    fn authorized(&self, request_id: &str, secret: &str) -> Result<&Request, RequestError> {
        let request = self
            .requests
            .get(request_id)
            .ok_or_else(|| RequestError::Unknown(request_id.to_string()))?;
        if bool::from(request.secret.as_bytes().ct_eq(secret.as_bytes())) {
            Ok(request)
        } else {
            Err(RequestError::BadSecret)
        }
    }

    fn close(&mut self, request_id: &str, outcome: Outcome) {
        if let Some(request) = self.requests.get(request_id) {
            request.outcome.send_replace(outcome);
        }
    }

    fn cool_down(&mut self, now: Instant, from: IpAddr) {
        if self.cooldowns.len() >= MAX_COOLDOWNS {
            if let Some(oldest) = self
                .cooldowns
                .iter()
                .min_by_key(|(_, until)| **until)
                .map(|(ip, _)| *ip)
            {
                self.cooldowns.remove(&oldest);
            }
        }
        self.cooldowns.insert(from, now + COOLDOWN);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIEWER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 7));

    fn ask(r: &mut JoinRequests, now: Instant, id: &str) -> Result<(), RequestError> {
        r.ask(now, VIEWER, " Ann\u{7}", id.into(), format!("secret-{id}"))
            .map(|name| assert_eq!(name, "Ann"))
    }

    fn mint(name: &str) -> (String, String, u64) {
        (format!("req-{name}"), "jwt".into(), 99)
    }

    #[test]
    fn an_accepted_request_hands_the_viewer_its_token_and_leaves_the_list() {
        let now = Instant::now();
        let mut r = JoinRequests::default();
        ask(&mut r, now, "q1").unwrap();
        let (mut events, expires) = r.follow(now, "q1", "secret-q1").unwrap();
        assert_eq!(expires, now + REQUEST_TTL);
        assert_eq!(*events.borrow_and_update(), Outcome::Pending);
        let later = now + Duration::from_secs(3);
        assert_eq!(
            r.pending_list(later),
            [PendingRequest {
                request_id: "q1".into(),
                name: "Ann".into(),
                waiting_secs: 3.0
            }]
        );
        assert_eq!(r.accept(later, "q1", mint).unwrap(), "req-Ann");
        assert!(events.has_changed().unwrap());
        assert_eq!(
            *events.borrow(),
            Outcome::Accepted {
                identity: "req-Ann".into(),
                token: "jwt".into(),
                expires_at: 99
            }
        );
        assert!(r.pending_list(later).is_empty());
        assert_eq!(
            r.accept(later, "q1", mint),
            Err(RequestError::NotPending("q1".into()))
        );
    }

    #[test]
    fn secrets_names_limits_and_the_switch_are_enforced() {
        let now = Instant::now();
        let mut r = JoinRequests::default();
        ask(&mut r, now, "q1").unwrap();
        assert_eq!(
            r.follow(now, "q1", "secret-q2").err(),
            Some(RequestError::BadSecret)
        );
        assert_eq!(
            r.follow(now, "nope", "x").err(),
            Some(RequestError::Unknown("nope".into()))
        );
        assert_eq!(
            r.ask(now, VIEWER, " \n ", "q2".into(), "s".into()),
            Err(RequestError::BadName)
        );
        assert_eq!(
            r.ask(now, VIEWER, &"x".repeat(65), "q2".into(), "s".into()),
            Err(RequestError::BadName)
        );
        // Two waiting per client (an IPv6 /64 counts as one).
        ask(&mut r, now, "q1b").unwrap();
        assert_eq!(ask(&mut r, now, "q1c"), Err(RequestError::AlreadyWaiting));
        let v6 = |last: u16| IpAddr::from([0x2001, 0xdb8, 0, 1, 0, 0, 0, last]);
        r.ask(now, v6(1), "A", "v1".into(), "s".into()).unwrap();
        r.ask(now, v6(2), "A", "v2".into(), "s".into()).unwrap();
        assert_eq!(
            r.ask(now, v6(3), "A", "v3".into(), "s".into()),
            Err(RequestError::AlreadyWaiting)
        );
        for i in 5..=MAX_PENDING {
            let from = IpAddr::from([198, 51, 100, i as u8]);
            r.ask(now, from, "Flood", format!("f{i}"), "s".into())
                .unwrap();
        }
        let from = IpAddr::from([198, 51, 100, 200]);
        assert_eq!(
            r.ask(now, from, "Over", "over".into(), "s".into()),
            Err(RequestError::TooMany)
        );
        // Off: every waiting request is declined, new ones are refused.
        let (events, _) = r.follow(now, "q1", "secret-q1").unwrap();
        r.set_settings(RequestSettings {
            enabled: false,
            max_guests: None,
        });
        assert!(matches!(*events.borrow(), Outcome::Declined { .. }));
        assert_eq!(ask(&mut r, now, "q3"), Err(RequestError::Off));
        assert!(r.pending_list(now).is_empty());
    }

    #[test]
    fn unanswered_requests_expire_and_declines_cool_the_address_down() {
        let now = Instant::now();
        let mut r = JoinRequests::default();
        ask(&mut r, now, "q1").unwrap();
        let (events, _) = r.follow(now, "q1", "secret-q1").unwrap();
        let later = now + REQUEST_TTL;
        assert!(r.pending_list(later).is_empty());
        assert_eq!(*events.borrow(), Outcome::Expired);

        ask(&mut r, later, "q2").unwrap();
        r.decline(later, "q2").unwrap();
        assert_eq!(
            ask(&mut r, later + Duration::from_secs(1), "q3"),
            Err(RequestError::CoolingDown(59))
        );
        ask(&mut r, later + COOLDOWN, "q3").unwrap();
        // A removed guest's address cools down as well.
        r.accept(later + COOLDOWN, "q3", mint).unwrap();
        r.removed(later + COOLDOWN, "req-Ann");
        assert!(matches!(
            ask(&mut r, later + COOLDOWN, "q4"),
            Err(RequestError::CoolingDown(_))
        ));
        // Accepted identities count toward the cap until forgotten; an answered request cannot
        // be withdrawn (a removal still cools its client down, however late).
        assert_eq!(r.accepted_identities(), ["req-Ann"]);
        assert_eq!(
            r.withdraw(later, "q3", "secret-q3"),
            Err(RequestError::NotPending("q3".into()))
        );
        let much_later = later + COOLDOWN + REQUEST_TTL * 3;
        r.expire(much_later);
        assert!(r.accepted_identities().is_empty());
        r.removed(much_later, "req-Ann");
        assert!(matches!(
            ask(&mut r, much_later, "q6"),
            Err(RequestError::CoolingDown(_))
        ));
        // A viewer may withdraw its own request only.
        let t = much_later + COOLDOWN;
        ask(&mut r, t, "q5").unwrap();
        assert_eq!(r.withdraw(t, "q5", "wrong"), Err(RequestError::BadSecret));
        r.withdraw(t, "q5", "secret-q5").unwrap();
        assert!(r.pending_list(t).is_empty());
    }
}
