//! An emulated file watcher: stands in for a server's own (envoy's SDS file watch). It polls
//! one path's inode and change time and runs an action (e.g. reloading the nginx that serves
//! the same certificate files) when the file is replaced. Emulated: it proves certctl's file
//! moves and contents, not envoy's own watcher.

use std::os::unix::fs::MetadataExt as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

pub struct Watcher {
    stop: Arc<AtomicBool>,
    fired: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watcher {
    pub fn start(path: PathBuf, action: impl Fn() + Send + 'static) -> Watcher {
        let stop = Arc::new(AtomicBool::new(false));
        let fired = Arc::new(AtomicUsize::new(0));
        let (s, f) = (stop.clone(), fired.clone());
        let identity = move || {
            std::fs::metadata(&path)
                .ok()
                .map(|m| (m.ino(), m.ctime(), m.ctime_nsec()))
        };
        let thread = std::thread::spawn(move || {
            let mut last = identity();
            while !s.load(Ordering::Relaxed) {
                let now = identity();
                if now.is_some() && now != last {
                    action();
                    f.fetch_add(1, Ordering::SeqCst);
                    last = now;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Watcher {
            stop,
            fired,
            thread: Some(thread),
        }
    }

    /// How many times the watched file was replaced.
    pub fn fired(&self) -> usize {
        self.fired.load(Ordering::SeqCst)
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
