//! [`RemoteMemory`]: a memory served by another process, behind the same [`MemoryApi`] as the
//! embedded one.

use std::time::Duration;
use tabagent_memory::{
    Change, ConsolidateOptions, Entity, EntityRef, Filter, GraphPath, MemoryApi, MemoryError,
    MemoryResult, Merge, Neighbourhood, Order, Outcome, Page, Record, Relation, SearchRequest,
    SearchResults, Stats, Store, WalkOptions,
};

use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::convert::{self as c, error};
use crate::pb;
use crate::pb::memory_client::MemoryClient;
use crate::server::MAX_MESSAGE_BYTES;

/// How long a call may take before it fails as unavailable (a stuck service must not hang
/// its callers), and how long connecting may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// An `https://` service's certificate is verified against `ca` (PEM) when given, else the
/// system's trusted roots; the name checked is the URL's host.
fn endpoint(url: &str, ca: Option<&[u8]>) -> MemoryResult<Endpoint> {
    let unavailable = |e: &dyn std::fmt::Display| MemoryError::Unavailable(format!("{url}: {e}"));
    let mut endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|e| unavailable(&e))?
        .timeout(CALL_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT);
    if url.starts_with("https://") {
        let tls = match ca {
            Some(pem) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)),
            None => ClientTlsConfig::new().with_native_roots(),
        };
        endpoint = endpoint.tls_config(tls).map_err(|e| unavailable(&e))?;
    } else if ca.is_some() {
        return Err(MemoryError::Unavailable(format!(
            "{url}: a CA certificate is given for a service reached without TLS; use https://"
        )));
    }
    Ok(endpoint)
}

/// A connection to a memory service (cheap to clone; calls share one HTTP/2 connection).
#[derive(Debug, Clone)]
pub struct RemoteMemory {
    client: MemoryClient<Channel>,
    authorization: Option<MetadataValue<tonic::metadata::Ascii>>,
}

impl RemoteMemory {
    /// Connects to the service at `url` (`http://host:port`), sending `api_key` when given.
    pub async fn connect(url: &str, api_key: Option<&str>) -> MemoryResult<Self> {
        Self::connect_verified(url, api_key, None).await
    }

    /// [`RemoteMemory::connect`] to an `https://` service whose certificate `ca` (PEM) signed.
    pub async fn connect_verified(
        url: &str,
        api_key: Option<&str>,
        ca: Option<&[u8]>,
    ) -> MemoryResult<Self> {
        let endpoint = endpoint(url, ca)?;
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| MemoryError::Unavailable(format!("{url}: {e}")))?;
        Self::with_channel(channel, api_key)
    }

    /// A client for `url` that connects on first use and reconnects after failures, so a
    /// service that is down only fails the calls made meanwhile.
    pub fn connect_lazy(url: &str, api_key: Option<&str>, ca: Option<&[u8]>) -> MemoryResult<Self> {
        let endpoint = endpoint(url, ca)?;
        Self::with_channel(endpoint.connect_lazy(), api_key)
    }

    fn with_channel(channel: Channel, api_key: Option<&str>) -> MemoryResult<Self> {
        let authorization = match api_key {
            Some(key) => Some(
                format!("Bearer {key}")
                    .parse()
                    .map_err(|_| MemoryError::Unavailable("the API key is not ASCII".into()))?,
            ),
            None => None,
        };
        Ok(Self {
            client: MemoryClient::new(channel)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            authorization,
        })
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(auth) = &self.authorization {
            request.metadata_mut().insert("authorization", auth.clone());
        }
        request
    }
}

impl MemoryApi for RemoteMemory {
    async fn apply(&self, changes: Vec<Change>) -> MemoryResult<Vec<Outcome>> {
        let request = self.request(pb::ApplyRequest {
            changes: changes.into_iter().map(c::change_pb).collect(),
        });
        let answer = self.client.clone().apply(request).await.map_err(error)?;
        answer
            .into_inner()
            .outcomes
            .into_iter()
            .map(c::outcome)
            .collect()
    }

    async fn get(&self, id: i64) -> MemoryResult<Record> {
        let request = self.request(pb::GetRequest { id });
        let answer = self.client.clone().get(request).await.map_err(error)?;
        c::record(answer.into_inner())
    }

    async fn get_by_key(&self, store: Store, key: String) -> MemoryResult<Option<Record>> {
        let request = self.request(pb::GetByKeyRequest {
            store: store.name().to_string(),
            key,
        });
        let answer = self
            .client
            .clone()
            .get_by_key(request)
            .await
            .map_err(error)?;
        answer.into_inner().record.map(c::record).transpose()
    }

    async fn list(
        &self,
        filter: Filter,
        order: Order,
        limit: usize,
        after: Option<i64>,
    ) -> MemoryResult<Page> {
        let request = self.request(pb::ListRequest {
            filter: Some(c::filter_pb(filter)),
            order: c::order_pb(order),
            limit: u32::try_from(limit).unwrap_or(u32::MAX),
            after,
        });
        let page = self
            .client
            .clone()
            .list(request)
            .await
            .map_err(error)?
            .into_inner();
        Ok(Page {
            records: page
                .records
                .into_iter()
                .map(c::record)
                .collect::<Result<_, _>>()?,
            next: page.next,
        })
    }

    async fn search(&self, request: SearchRequest) -> MemoryResult<SearchResults> {
        let request = self.request(c::search_request_pb(request));
        let found = self.client.clone().search(request).await.map_err(error)?;
        c::search_results(found.into_inner())
    }

    async fn stats(&self) -> MemoryResult<Stats> {
        let request = self.request(pb::StatsRequest {});
        let stats = self.client.clone().stats(request).await.map_err(error)?;
        c::stats(stats.into_inner())
    }

    async fn entity(&self, reference: EntityRef) -> MemoryResult<Entity> {
        let request = self.request(c::entity_ref_pb(reference));
        let entity = self
            .client
            .clone()
            .get_entity(request)
            .await
            .map_err(error)?;
        Ok(c::entity(entity.into_inner()))
    }

    async fn relation(&self, id: i64) -> MemoryResult<Relation> {
        let request = self.request(pb::GetRequest { id });
        let relation = self
            .client
            .clone()
            .get_relation(request)
            .await
            .map_err(error)?;
        Ok(c::relation(relation.into_inner()))
    }

    async fn neighbourhood(
        &self,
        start: EntityRef,
        hops: u32,
        options: WalkOptions,
    ) -> MemoryResult<Neighbourhood> {
        let request = self.request(pb::NeighbourhoodRequest {
            start: Some(c::entity_ref_pb(start)),
            hops,
            options: Some(c::walk_pb(options)),
        });
        let found = self
            .client
            .clone()
            .neighbourhood(request)
            .await
            .map_err(error)?;
        Ok(c::neighbourhood(found.into_inner()))
    }

    async fn shortest_path(
        &self,
        from: EntityRef,
        to: EntityRef,
        max_hops: u32,
        options: WalkOptions,
    ) -> MemoryResult<Option<GraphPath>> {
        let request = self.request(pb::PathRequest {
            from: Some(c::entity_ref_pb(from)),
            to: Some(c::entity_ref_pb(to)),
            max_hops,
            options: Some(c::walk_pb(options)),
        });
        let found = self
            .client
            .clone()
            .shortest_path(request)
            .await
            .map_err(error)?
            .into_inner();
        Ok(found.found.then(|| GraphPath {
            entities: found.entities.into_iter().map(c::entity).collect(),
            relations: found.relations.into_iter().map(c::relation).collect(),
        }))
    }

    async fn duplicate_entities(&self, options: ConsolidateOptions) -> MemoryResult<Vec<Merge>> {
        let request = self.request(pb::ConsolidateRequest {
            similarity: options.similarity,
        });
        let merges = self
            .client
            .clone()
            .duplicates(request)
            .await
            .map_err(error)?;
        Ok(merges
            .into_inner()
            .merges
            .into_iter()
            .map(c::merge)
            .collect())
    }

    async fn consolidate(&self, options: ConsolidateOptions) -> MemoryResult<Vec<Merge>> {
        let request = self.request(pb::ConsolidateRequest {
            similarity: options.similarity,
        });
        let merges = self
            .client
            .clone()
            .consolidate(request)
            .await
            .map_err(error)?;
        Ok(merges
            .into_inner()
            .merges
            .into_iter()
            .map(c::merge)
            .collect())
    }
}
