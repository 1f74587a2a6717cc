//! Which instance polls the source when several share a PostgreSQL ledger: a lease in the `leaders`
//! table, taken and renewed by the poll loop.

use super::*;

/// The lease (in the ledger's `leaders` table) held by the one instance that polls the source.
pub(super) const POLL_ROLE: &str = "source_poller";

impl App {
    /// Takes or renews the lease on polling the source. An error counts as not leading: the next round
    /// asks again.
    pub(super) async fn lead_polling(&self) -> bool {
        let now = Timestamp::now().as_millisecond();
        let lease = Duration::from_secs(self.settings.store.lease_seconds).as_millis() as i64;
        let owner = &self.settings.store.instance;
        match self
            .store
            .try_lead(POLL_ROLE, owner, now, now + lease)
            .await
        {
            Ok(leading) => leading,
            Err(error) => {
                tracing::warn!(error = %error, "cannot renew the polling lease; not polling this round");
                false
            }
        }
    }

    /// Renews the polling lease while a poll runs (a first poll of a large backlog can outlast the
    /// lease); returns when another instance holds it, or when renewals have failed for as long as the
    /// lease lasts (it may have lapsed). A renewal that fails once (a busy store) does not stop the
    /// poll: cancelling it would leave its last page's write running beside the next poll, and a lease
    /// renewed at a third of its term outlives a failed renewal or two.
    pub(super) async fn keep_polling_lease(&self) {
        let every = Duration::from_secs(self.settings.store.lease_seconds) / 3;
        let lease = Duration::from_secs(self.settings.store.lease_seconds).as_millis() as i64;
        let mut renewed_at = Timestamp::now().as_millisecond();
        loop {
            tokio::time::sleep(every).await;
            let now = Timestamp::now().as_millisecond();
            match self
                .store
                .try_lead(POLL_ROLE, &self.settings.store.instance, now, now + lease)
                .await
            {
                Ok(true) => renewed_at = now,
                Ok(false) => return,
                Err(error) if now - renewed_at < lease => {
                    tracing::warn!(error = %error, "cannot renew the polling lease; the poll goes on and tries again")
                }
                Err(error) => {
                    tracing::warn!(error = %error, "the polling lease could not be renewed within its term; this poll stops");
                    return;
                }
            }
        }
    }
}
