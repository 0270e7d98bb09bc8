//! Requests from the host to a Service's ClusterIP, through kube-proxy, in the background: each
//! answer (or failure) with the time it came back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{At, now};

/// One request's outcome: the answer's body, or why there was none.
#[derive(Debug, Clone)]
pub struct Answer {
    /// When it came back.
    pub at: At,
    /// The body, or the error.
    pub body: Result<String, String>,
}

impl Answer {
    /// The pod that answered, and whether it said it leads: bodies are `POD leads on PORT` or
    /// `POD does not lead on PORT`.
    pub fn from(&self) -> Option<(String, bool)> {
        let body = self.body.as_ref().ok()?;
        let (pod, rest) = body.trim().split_once(' ')?;
        Some((pod.to_owned(), rest.starts_with("leads")))
    }
}

/// GETs `url` every `every` until dropped.
pub struct Prober {
    answers: Arc<Mutex<Vec<Answer>>>,
    stop: Arc<AtomicBool>,
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl Prober {
    /// Starts probing `url` (`http://IP:PORT/`).
    pub fn start(url: &str, every: Duration) -> Self {
        let answers = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (recorded, stopped, url) = (answers.clone(), stop.clone(), url.to_owned());
        std::thread::spawn(move || {
            while !stopped.load(Ordering::SeqCst) {
                let body = get(&url);
                recorded.lock().unwrap().push(Answer { at: now(), body });
                std::thread::sleep(every);
            }
        });
        Self { answers, stop }
    }

    /// Every outcome so far.
    pub fn answers(&self) -> Vec<Answer> {
        self.answers.lock().unwrap().clone()
    }
}

/// One GET: the body of a 200, or the error.
pub fn get(url: &str) -> Result<String, String> {
    match sync_testkit::http::get(url) {
        Ok((200, body)) => Ok(body),
        Ok((status, body)) => Err(format!("{status}: {body}")),
        Err(err) => Err(format!("{err:#}")),
    }
}
