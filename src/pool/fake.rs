//! A [`MixerBackend`] for unit tests of rooms and the API: real admission (the same ledger and
//! cost function as the pool), no processes. A launched mixer records every command it gets and
//! answers `Start` with `Ready`, so a room goes live through the real seam without GStreamer.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use costream_mixer::control::{Command, Event, VideoSpec};
use tokio::sync::{mpsc, watch};

use super::admission::{expected_inputs, Ledger, RoomLoad};
use super::{
    cores, LaunchError, MixerBackend, MixerInfo, MixerLink, MixerReport, PoolView, Refusal,
};

const RESERVE_INPUTS: u32 = 4;

#[derive(Clone)]
pub struct FakeMixers {
    state: Arc<Mutex<FakeState>>,
    live: watch::Sender<usize>,
}

struct FakeState {
    ledger: Ledger,
    /// (room, command) in the order the rooms' mixers got them.
    commands: Vec<(String, Command)>,
    launches: usize,
    draining: bool,
}

impl FakeMixers {
    pub fn new(capacity_millicores: u64) -> Self {
        Self {
            state: Arc::new(Mutex::new(FakeState {
                ledger: Ledger::new(capacity_millicores),
                commands: Vec::new(),
                launches: 0,
                draining: false,
            })),
            live: watch::Sender::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every command a mixer of `room_id` received.
    pub fn commands(&self, room_id: &str) -> Vec<Command> {
        self.lock()
            .commands
            .iter()
            .filter(|(room, _)| room == room_id)
            .map(|(_, c)| c.clone())
            .collect()
    }

    pub fn launches(&self) -> usize {
        self.lock().launches
    }
}

impl MixerBackend for FakeMixers {
    fn admit(&self, room_id: &str, video: &VideoSpec, inputs: u32) -> Result<u64, Refusal> {
        let mut st = self.lock();
        if st.draining {
            return Err(Refusal::Draining);
        }
        let decision = st.ledger.admit(
            room_id,
            RoomLoad::new(video, expected_inputs(inputs, RESERVE_INPUTS)),
        );
        let rooms = st.ledger.rooms().count();
        drop(st);
        self.live.send_replace(rooms);
        if decision.admitted {
            Ok(decision.cost)
        } else {
            Err(Refusal::Full {
                cost: decision.cost,
                free: decision.capacity.saturating_sub(decision.used_before),
                capacity: decision.capacity,
                retry_after_secs: 7,
            })
        }
    }

    fn resize(&self, room_id: &str, video: &VideoSpec, inputs: u32) {
        let load = RoomLoad::new(video, expected_inputs(inputs, RESERVE_INPUTS));
        self.lock().ledger.resize(room_id, load);
    }

    fn release(&self, room_id: &str) {
        let mut st = self.lock();
        st.ledger.release(room_id);
        let rooms = st.ledger.rooms().count();
        drop(st);
        self.live.send_replace(rooms);
    }

    fn cost_of(&self, room_id: &str) -> Option<f64> {
        self.lock().ledger.cost_of(room_id).map(cores)
    }

    fn launch(
        &self,
        room_id: &str,
        epoch: u64,
        reports: mpsc::Sender<MixerReport>,
    ) -> Result<Box<dyn MixerLink>, LaunchError> {
        self.lock().launches += 1;
        Ok(Box::new(FakeLink {
            room_id: room_id.to_string(),
            epoch,
            reports,
            state: self.state.clone(),
        }))
    }

    fn view(&self) -> PoolView {
        let st = self.lock();
        PoolView {
            capacity: cores(st.ledger.capacity()),
            capacity_cores: cores(st.ledger.capacity()),
            max_utilization: 1.0,
            used: cores(st.ledger.used()),
            free: cores(st.ledger.free()),
            warm_mixers: 0,
            warm_target: 0,
            warm_pids: Vec::new(),
            mixer_binary: "fake".into(),
            draining: st.draining,
            rooms: super::room_costs(&st.ledger),
            workers: None,
        }
    }

    fn start_draining(&self) {
        self.lock().draining = true;
    }

    fn is_draining(&self) -> bool {
        self.lock().draining
    }

    fn live_rooms(&self) -> watch::Receiver<usize> {
        self.live.subscribe()
    }

    fn shutdown(&self) {}
}

struct FakeLink {
    room_id: String,
    epoch: u64,
    reports: mpsc::Sender<MixerReport>,
    state: Arc<Mutex<FakeState>>,
}

impl MixerLink for FakeLink {
    fn epoch(&self) -> u64 {
        self.epoch
    }

    fn send(&self, command: Command) -> bool {
        if matches!(command, Command::Start { .. }) {
            let ready = Event::Ready {
                version: "fake".into(),
                binary: "fake".into(),
            };
            let _ = self.reports.try_send(MixerReport::Event {
                epoch: self.epoch,
                event: ready,
            });
        }
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .commands
            .push((self.room_id.clone(), command));
        true
    }

    fn stop(self: Box<Self>, _grace: Duration) {
        self.send(Command::Shutdown);
    }

    fn info(&self) -> MixerInfo {
        MixerInfo {
            binary: Some("fake".into()),
            ..MixerInfo::default()
        }
    }
}
