//! The engine's event stream (`GET /events`, `docker events`): what happened to
//! containers and images, in the API's JSON shape. Recent events are kept so a
//! client asking `since` a time gets them; listeners get new ones as they come.

use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// Events kept for `since` queries.
const KEEP: usize = 1024;

/// One event.
#[derive(Debug, Clone)]
pub struct Event {
    pub kind: &'static str,
    pub action: String,
    pub id: String,
    pub attributes: Vec<(String, String)>,
    pub time_nano: u128,
}

impl Event {
    pub fn json(&self) -> Value {
        let attrs: serde_json::Map<String, Value> = self
            .attributes
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(v.clone())))
            .collect();
        let mut v = json!({
            "Type": self.kind,
            "Action": self.action,
            "Actor": {"ID": self.id, "Attributes": attrs},
            "scope": "local",
            "time": (self.time_nano / 1_000_000_000) as i64,
            "timeNano": self.time_nano as i64,
        });
        // The fields API 1.21 clients read.
        if self.kind == "container" {
            v["status"] = Value::from(self.action.clone());
            v["id"] = Value::from(self.id.clone());
            if let Some((_, img)) = self.attributes.iter().find(|(k, _)| k == "image") {
                v["from"] = Value::from(img.clone());
            }
        } else if self.kind == "image" {
            v["status"] = Value::from(self.action.clone());
            v["id"] = Value::from(self.id.clone());
        }
        v
    }

    pub fn attr(&self, k: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(a, _)| a == k)
            .map(|(_, v)| v.as_str())
    }
}

/// The bus: a ring of recent events and a sequence number waiters watch.
#[derive(Default)]
pub struct Bus {
    inner: Mutex<(u64, VecDeque<(u64, Event)>)>,
    cv: Condvar,
}

impl Bus {
    pub fn emit(
        &self,
        kind: &'static str,
        action: &str,
        id: &str,
        attributes: Vec<(String, String)>,
    ) {
        let time_nano = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let mut g = self.inner.lock().unwrap();
        g.0 += 1;
        let seq = g.0;
        g.1.push_back((
            seq,
            Event {
                kind,
                action: action.to_string(),
                id: id.to_string(),
                attributes,
                time_nano,
            },
        ));
        if g.1.len() > KEEP {
            g.1.pop_front();
        }
        self.cv.notify_all();
    }

    /// The sequence number of the newest event.
    pub fn head(&self) -> u64 {
        self.inner.lock().unwrap().0
    }

    /// Events after `seq` (kept ones), waiting up to `wait` for one to come.
    pub fn after(&self, seq: u64, wait: std::time::Duration) -> (u64, Vec<Event>) {
        let mut g = self.inner.lock().unwrap();
        if g.0 == seq {
            g = self.cv.wait_timeout(g, wait).unwrap().0;
        }
        let evs: Vec<Event> =
            g.1.iter()
                .filter(|(s, _)| *s > seq)
                .map(|(_, e)| e.clone())
                .collect();
        (g.0, evs)
    }

    /// Every kept event.
    pub fn kept(&self) -> (u64, Vec<Event>) {
        let g = self.inner.lock().unwrap();
        (g.0, g.1.iter().map(|(_, e)| e.clone()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_have_the_api_shape_and_wake_waiters() {
        let b = std::sync::Arc::new(Bus::default());
        let seq = b.head();
        let b2 = b.clone();
        let t = std::thread::spawn(move || b2.after(seq, std::time::Duration::from_secs(60)));
        b.emit(
            "container",
            "start",
            "abc",
            vec![
                ("name".into(), "wn1".into()),
                ("image".into(), "sl6".into()),
            ],
        );
        let (_, evs) = t.join().unwrap();
        assert_eq!(evs.len(), 1);
        let j = evs[0].json();
        assert_eq!(j["Type"], "container");
        assert_eq!(j["Action"], "start");
        assert_eq!(j["Actor"]["Attributes"]["name"], "wn1");
        assert_eq!(j["status"], "start");
        assert_eq!(j["from"], "sl6");
    }
}
