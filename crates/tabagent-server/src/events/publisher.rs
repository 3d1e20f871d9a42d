//! Sends the outbox to Redis, oldest first, in batches: `XADD <prefix>:<stream> MAXLEN ~ N *
//! event_id … type … time … data …`. While Redis cannot be reached the outbox grows and the
//! publisher tries again, waiting longer each time (up to a few seconds); once a batch is in
//! Redis it is deleted from the outbox.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;

use super::Events;

/// Events sent in one round trip.
const BATCH: usize = 256;
/// How often the outbox is looked at without being told of an event (another process, such as
/// `tabagent ingest`, may have added to it).
const LOOK_AGAIN: Duration = Duration::from_secs(1);

/// Starts sending `events`' outbox to its Redis until the process ends.
pub fn start(events: Events) {
    let Some(url) = events.settings().redis_url.clone() else {
        return;
    };
    let client = match redis::Client::open(url.expose()) {
        Ok(client) => client,
        // Checked with the configuration; kept for the type.
        Err(e) => {
            tracing::error!(error = %e, "events.redis_url is not a Redis URL; no events are sent");
            return;
        }
    };
    tracing::info!(url = %url.redacted(), prefix = %events.settings().stream_prefix, "events: publishing to Redis Streams");
    tokio::spawn(run(events, client));
}

async fn run(events: Events, client: redis::Client) {
    let mut connection: Option<MultiplexedConnection> = None;
    let mut outage = super::Outage::new();
    loop {
        let outbox_events = events.clone();
        let batch =
            match tokio::task::spawn_blocking(move || outbox_events.outbox().oldest(BATCH)).await {
                Ok(Ok(batch)) => batch,
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "events: cannot read the outbox");
                    tokio::time::sleep(super::Outage::MAX_WAIT).await;
                    continue;
                }
                Err(_) => return,
            };
        if batch.is_empty() {
            tokio::select! {
                _ = events.next_kept() => {}
                _ = tokio::time::sleep(LOOK_AGAIN) => {}
            }
            continue;
        }
        let sent = async {
            let connection = match &mut connection {
                Some(open) => open,
                none => {
                    let config = AsyncConnectionConfig::new()
                        .set_connection_timeout(Some(Duration::from_secs(5)))
                        .set_response_timeout(Some(Duration::from_secs(10)));
                    none.insert(
                        client
                            .get_multiplexed_async_connection_with_config(&config)
                            .await?,
                    )
                }
            };
            let mut pipe = redis::pipe();
            let max_len = events.settings().max_len;
            for event in &batch {
                pipe.cmd("XADD")
                    .arg(format!(
                        "{}:{}",
                        events.settings().stream_prefix,
                        event.stream
                    ))
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(max_len)
                    .arg("*")
                    .arg("event_id")
                    .arg(event.id)
                    .arg("type")
                    .arg(&event.kind)
                    .arg("time")
                    .arg(event.time_ms)
                    .arg("data")
                    .arg(&event.data)
                    .ignore();
            }
            pipe.query_async::<()>(connection).await
        }
        .await;
        match sent {
            Ok(()) => {
                outage.ended("sending what waited");
                let last = batch.last().map_or(0, |event| event.id);
                let outbox_events = events.clone();
                match tokio::task::spawn_blocking(move || outbox_events.outbox().sent(last)).await {
                    Ok(Ok(())) => {}
                    // Sent again later: consumers see `event_id` twice.
                    Ok(Err(e)) => tracing::error!(error = %e, "events: cannot update the outbox"),
                    Err(_) => return,
                }
            }
            Err(e) => {
                connection = None;
                outage.failed(&e, "events wait in the outbox").await;
            }
        }
    }
}
