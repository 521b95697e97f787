//! Download tickets: a short-lived permission to fetch one file, carried in its URL, so a
//! browser can download (and a player seek through) a recording with a plain link while the
//! room's tokens stay in headers. `EXPIRY.SIGNATURE`: HMAC-SHA256 with the server's signing
//! secret over what it allows and until when. Not a JWT, so it can never pass for a token.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How long a ticket works: enough to start a download or a player, too short to be worth
/// stealing from a log (an ongoing download is not cut off when it expires).
pub const TICKET_TTL_SECS: u64 = 120;

fn mac(secret: &str, what: &str, expiry: u64) -> Hmac<Sha256> {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(b"costream-ticket\n");
    mac.update(what.as_bytes());
    mac.update(b"\n");
    mac.update(expiry.to_string().as_bytes());
    mac
}

/// A ticket for `what` (e.g. `recording/{room}/{recording_id}`) until `expiry` (Unix seconds).
pub fn issue(secret: &str, what: &str, expiry: u64) -> String {
    let signature = mac(secret, what, expiry).finalize().into_bytes();
    let hex: String = signature.iter().map(|b| format!("{b:02x}")).collect();
    format!("{expiry}.{hex}")
}

/// Whether `ticket` allows `what` at `now`. Compared in constant time.
pub fn check(secret: &str, ticket: &str, what: &str, now: u64) -> bool {
    let Some((expiry, hex)) = ticket.split_once('.') else {
        return false;
    };
    let Ok(expiry) = expiry.parse::<u64>() else {
        return false;
    };
    if now > expiry || hex.len() != 64 {
        return false;
    }
    let Some(signature) = (0..32)
        .map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()
    else {
        return false;
    };
    mac(secret, what, expiry).verify_slice(&signature).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_ticket_allows_its_file_until_it_expires() {
        let ticket = issue("s3cret", "recording/r1/rec-a-1", 1000);
        assert!(check("s3cret", &ticket, "recording/r1/rec-a-1", 1000));
        assert!(
            !check("s3cret", &ticket, "recording/r1/rec-a-1", 1001),
            "expired"
        );
        assert!(
            !check("s3cret", &ticket, "recording/r1/rec-a-2", 900),
            "another file"
        );
        assert!(
            !check("s3cret", &ticket, "recording/r2/rec-a-1", 900),
            "another room"
        );
        assert!(
            !check("other", &ticket, "recording/r1/rec-a-1", 900),
            "another server"
        );
        let (_, signature) = ticket.split_once('.').unwrap();
        let later = format!("2000.{signature}");
        assert!(
            !check("s3cret", &later, "recording/r1/rec-a-1", 900),
            "expiry moved"
        );
    }

    proptest! {
        /// Anything a client sends is refused without a panic, unless it is a real ticket.
        #[test]
        fn garbage_is_refused(ticket in ".{0,100}") {
            prop_assert!(!check("s3cret", &ticket, "recording/r1/rec-a-1", 0));
        }
    }
}
