//! Following a lock: its state now, then after every change, from the elector's watch stream.

use std::pin::Pin;

use futures_util::{Stream, StreamExt};
use sync_protocol::{LockName, LockState, WATCH_EVENT, paths};

use crate::client::Client;
use crate::error::{Error, Result};

/// A stream of a lock's states: the state now, then one after every change.
pub type LockStream = Pin<Box<dyn Stream<Item = Result<LockState>> + Send>>;

impl Client {
    /// Follows lock `name`: its state now, then after every change of holder, value or token.
    /// The stream ends when the elector shuts down.
    ///
    /// ```no_run
    /// # async fn run() -> sync_client::Result<()> {
    /// use futures_util::StreamExt;
    ///
    /// let mut states = sync_client::Client::new().watch("test").await?;
    /// while let Some(state) = states.next().await {
    ///     println!("{:?}", state?.holder);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn watch(&self, name: &str) -> Result<LockStream> {
        let name = LockName::new(name)?;
        let events = self.events(&paths::watch(name.as_str())).await?;
        Ok(Box::pin(events.filter_map(|item| async move {
            match item {
                Ok((kind, data)) if kind == WATCH_EVENT => Some(
                    serde_json::from_str::<LockState>(&data)
                        .map_err(|e| Error::Protocol(format!("unreadable watch event: {e}"))),
                ),
                Ok(_) => None,
                Err(err) => Some(Err(err)),
            }
        })))
    }
}
