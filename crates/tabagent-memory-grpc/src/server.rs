//! The gRPC service: each RPC converts its request, calls the [`MemoryApi`] behind it, and
//! converts the answer; errors travel whole (see `convert::status`).

use std::future::Future;

use tabagent_memory::{ConsolidateOptions, MemoryApi, Store};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

use crate::convert::{self as c, status};
use crate::pb;
use crate::pb::memory_server::{Memory, MemoryServer};

/// Largest message a client may send or receive (a transaction of many records).
pub const MAX_MESSAGE_BYTES: usize = 32 << 20;

/// A [`MemoryApi`] served over gRPC.
#[derive(Debug)]
pub struct MemoryService<B> {
    api: B,
}

impl<B> MemoryService<B> {
    /// Serves `api`.
    pub fn new(api: B) -> Self {
        Self { api }
    }
}

type Answer<T> = Result<Response<T>, Status>;

fn ok<T>(value: T) -> Answer<T> {
    Ok(Response::new(value))
}

#[tonic::async_trait]
impl<B: MemoryApi + 'static> Memory for MemoryService<B> {
    async fn apply(&self, request: Request<pb::ApplyRequest>) -> Answer<pb::ApplyResponse> {
        let changes = request
            .into_inner()
            .changes
            .into_iter()
            .map(c::change)
            .collect::<Result<Vec<_>, _>>()
            .map_err(status)?;
        let outcomes = self.api.apply(changes).await.map_err(status)?;
        ok(pb::ApplyResponse {
            outcomes: outcomes.into_iter().map(c::outcome_pb).collect(),
        })
    }

    async fn get(&self, request: Request<pb::GetRequest>) -> Answer<pb::Record> {
        let record = self
            .api
            .get(request.into_inner().id)
            .await
            .map_err(status)?;
        ok(c::record_pb(record))
    }

    async fn get_by_key(&self, request: Request<pb::GetByKeyRequest>) -> Answer<pb::MaybeRecord> {
        let r = request.into_inner();
        let store = Store::parse(&r.store).map_err(status)?;
        let found = self.api.get_by_key(store, r.key).await.map_err(status)?;
        ok(pb::MaybeRecord {
            record: found.map(c::record_pb),
        })
    }

    async fn list(&self, request: Request<pb::ListRequest>) -> Answer<pb::Page> {
        let r = request.into_inner();
        let filter = c::filter(r.filter).map_err(status)?;
        let order = c::order(&r.order).map_err(status)?;
        let page = self
            .api
            .list(filter, order, r.limit as usize, r.after)
            .await
            .map_err(status)?;
        ok(pb::Page {
            records: page.records.into_iter().map(c::record_pb).collect(),
            next: page.next,
        })
    }

    async fn search(&self, request: Request<pb::SearchRequest>) -> Answer<pb::SearchResults> {
        let search = c::search_request(request.into_inner()).map_err(status)?;
        let found = self.api.search(search).await.map_err(status)?;
        ok(c::search_results_pb(found))
    }

    async fn stats(&self, _: Request<pb::StatsRequest>) -> Answer<pb::Stats> {
        ok(c::stats_pb(self.api.stats().await.map_err(status)?))
    }

    async fn get_entity(&self, request: Request<pb::EntityRef>) -> Answer<pb::Entity> {
        let reference = c::entity_ref(Some(request.into_inner()), "entity").map_err(status)?;
        ok(c::entity_pb(
            self.api.entity(reference).await.map_err(status)?,
        ))
    }

    async fn get_relation(&self, request: Request<pb::GetRequest>) -> Answer<pb::Relation> {
        let id = request.into_inner().id;
        ok(c::relation_pb(self.api.relation(id).await.map_err(status)?))
    }

    async fn neighbourhood(
        &self,
        request: Request<pb::NeighbourhoodRequest>,
    ) -> Answer<pb::Neighbourhood> {
        let r = request.into_inner();
        let start = c::entity_ref(r.start, "entity").map_err(status)?;
        let options = c::walk(r.options).map_err(status)?;
        let found = self
            .api
            .neighbourhood(start, r.hops, options)
            .await
            .map_err(status)?;
        ok(c::neighbourhood_pb(found))
    }

    async fn shortest_path(&self, request: Request<pb::PathRequest>) -> Answer<pb::PathResponse> {
        let r = request.into_inner();
        let from = c::entity_ref(r.from, "from").map_err(status)?;
        let to = c::entity_ref(r.to, "to").map_err(status)?;
        let options = c::walk(r.options).map_err(status)?;
        let found = self
            .api
            .shortest_path(from, to, r.max_hops, options)
            .await
            .map_err(status)?;
        ok(match found {
            Some(path) => pb::PathResponse {
                found: true,
                entities: path.entities.into_iter().map(c::entity_pb).collect(),
                relations: path.relations.into_iter().map(c::relation_pb).collect(),
            },
            None => pb::PathResponse::default(),
        })
    }

    async fn duplicates(&self, request: Request<pb::ConsolidateRequest>) -> Answer<pb::Merges> {
        let options = ConsolidateOptions {
            similarity: request.into_inner().similarity,
        };
        let merges = self.api.duplicate_entities(options).await.map_err(status)?;
        ok(pb::Merges {
            merges: merges.into_iter().map(c::merge_pb).collect(),
        })
    }

    async fn consolidate(&self, request: Request<pb::ConsolidateRequest>) -> Answer<pb::Merges> {
        let options = ConsolidateOptions {
            similarity: request.into_inner().similarity,
        };
        let merges = self.api.consolidate(options).await.map_err(status)?;
        ok(pb::Merges {
            merges: merges.into_iter().map(c::merge_pb).collect(),
        })
    }
}

/// A certificate chain and its private key, PEM, for serving TLS.
#[derive(Clone)]
pub struct TlsIdentity {
    /// The certificate chain, leaf first.
    pub cert_pem: Vec<u8>,
    /// Its private key.
    pub key_pem: Vec<u8>,
}

/// Serves `api` on `listener` until `shutdown` completes, over TLS with `tls`. With
/// `api_keys`, every call must carry `authorization: Bearer <key>` with one of them.
pub async fn serve<B: MemoryApi + 'static>(
    api: B,
    listener: tokio::net::TcpListener,
    api_keys: Vec<String>,
    tls: Option<TlsIdentity>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let check = move |request: Request<()>| -> Result<Request<()>, Status> {
        if api_keys.is_empty() {
            return Ok(request);
        }
        let given = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match given {
            // Every key is compared, each in constant time: neither which key nor how much
            // of one matched shows in the time taken.
            Some(key)
                if api_keys.iter().fold(false, |found, k| {
                    found | tabagent_core::secret::constant_time_eq(key.as_bytes(), k.as_bytes())
                }) =>
            {
                Ok(request)
            }
            _ => Err(Status::unauthenticated(
                "this memory service needs `authorization: Bearer <key>`",
            )),
        }
    };
    let service = MemoryServer::new(MemoryService::new(api))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        let identity = tonic::transport::Identity::from_pem(tls.cert_pem, tls.key_pem);
        builder =
            builder.tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))?;
    }
    builder
        .add_service(tonic::service::interceptor::InterceptedService::new(
            service, check,
        ))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await
}
