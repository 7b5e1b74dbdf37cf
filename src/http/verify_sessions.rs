//! The read snapshots `spare verify` holds open on a node, each named by a random id and
//! dropped [`SESSION_TTL`] after its last use: an abandoned verification does not pin its
//! WAL read position for long.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::store::verify::Snapshot;

/// Snapshots one node holds open at once (each pins a WAL read position).
pub const MAX_SESSIONS: usize = 4;
/// A snapshot is dropped this long after its last use, closed or not.
pub const SESSION_TTL: Duration = Duration::from_secs(300);
/// An open snapshot and when it was opened.
type Session = (Instant, Arc<Mutex<Snapshot>>);

/// The open snapshots of a node; each ends [`SESSION_TTL`] after its last use.
#[derive(Default)]
pub struct Sessions {
    open: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    fn sweep(open: &mut HashMap<String, Session>) {
        open.retain(|_, (used, _)| used.elapsed() < SESSION_TTL);
    }

    pub(crate) fn insert(self: &Arc<Self>, snap: Snapshot) -> Result<String> {
        let mut open = self.open.lock().expect("sessions lock");
        Self::sweep(&mut open);
        if open.len() >= MAX_SESSIONS {
            return Err(Error::Busy(format!(
                "{MAX_SESSIONS} verifications are running on this node; retry when one ended"
            )));
        }
        let id = format!("{:016x}", rand::random::<u64>());
        open.insert(id.clone(), (Instant::now(), Arc::new(Mutex::new(snap))));
        // An abandoned verification must not pin its read position for long: swept
        // once its time is over even if nothing else comes.
        let me = self.clone();
        std::thread::spawn(move || {
            std::thread::sleep(SESSION_TTL + Duration::from_secs(1));
            Self::sweep(&mut me.open.lock().expect("sessions lock"));
        });
        Ok(id)
    }

    pub(crate) fn get(&self, id: &str) -> Result<Arc<Mutex<Snapshot>>> {
        let mut open = self.open.lock().expect("sessions lock");
        Self::sweep(&mut open);
        open.get_mut(id)
            .map(|(used, s)| {
                *used = Instant::now();
                s.clone()
            })
            .ok_or_else(|| {
                Error::InvalidInput(format!(
                    "no open verification {id} here (it ended, or ran past {SESSION_TTL:?}): run spare verify again"
                ))
            })
    }

    pub(crate) fn remove(&self, id: &str) {
        self.open.lock().expect("sessions lock").remove(id);
    }
}
