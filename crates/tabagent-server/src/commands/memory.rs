//! `tabagent memory ...` and `tabagent db ...`: the memory database from the command line.
//!
//! `memory` works on whichever memory the configuration names: the embedded database (opened
//! directly: SQLite in WAL mode allows it beside a running server, whose vector indexes replay
//! what these write), a memory service, or PostgreSQL. `db` works on the embedded database.

use anyhow::{bail, Context};
use tabagent_memory::{
    ConsolidateOptions, Direction, EntityRef, Filter, Memory, MemoryApi, NewEntity, NewRecord,
    NewRelation, Order, SearchRequest, Store, WalkOptions,
};

use crate::cli::{DbAction, MemoryAction};
use crate::config::Config;
use crate::memory_backend::MemoryBackend;

fn open(config: &Config) -> anyhow::Result<Memory> {
    let memory_config = config.memory_config();
    Memory::open(&memory_config)
        .with_context(|| format!("cannot open the memory in {}", memory_config.path.display()))
}

fn one_line(text: &str, width: usize) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > width {
        format!("{}…", flat.chars().take(width).collect::<String>())
    } else {
        flat
    }
}

/// `tabagent memory`.
pub async fn run(config: &Config, action: MemoryAction) -> anyhow::Result<()> {
    let memory = MemoryBackend::open(config)
        .await?
        .publishing(crate::events::Events::open(config)?);
    match action {
        MemoryAction::Add {
            store,
            text,
            tags,
            key,
            kind,
            conversation,
            source,
        } => {
            let store = Store::parse(&store)?;
            let record = memory
                .insert(
                    store,
                    NewRecord {
                        text,
                        tags,
                        key,
                        kind,
                        conversation,
                        source,
                        ..Default::default()
                    },
                )
                .await?;
            println!("{}", record.id);
        }
        MemoryAction::Import { file } => import(&memory, &file).await?,
        MemoryAction::Ls {
            store,
            limit,
            tags,
            json,
        } => {
            let filter = Filter {
                stores: vec![Store::parse(&store)?],
                tags,
                ..Default::default()
            };
            let page = memory.list(filter, Order::Newest, limit, None).await?;
            for r in page.records {
                if json {
                    println!("{}", serde_json::to_string(&r)?);
                } else {
                    println!("{:>8}  {:<12} {}", r.id, r.kind, one_line(&r.text, 90));
                }
            }
        }
        MemoryAction::Get { id } => {
            println!("{}", serde_json::to_string_pretty(&memory.get(id).await?)?);
        }
        MemoryAction::Rm { id } => {
            memory.delete(id).await?;
            println!("deleted {id}");
        }
        MemoryAction::Search {
            query,
            stores,
            limit,
            json,
        } => {
            let mut request = SearchRequest::keyword(&query);
            request.limit = limit;
            request.filter.stores = stores
                .iter()
                .map(|s| Store::parse(s))
                .collect::<Result<_, _>>()?;
            for hit in memory.search(request).await?.hits {
                if json {
                    println!("{}", serde_json::to_string(&hit)?);
                } else {
                    println!(
                        "{:>8}  {:<13} {:>7.3}  {}",
                        hit.record.id,
                        hit.record.store.name(),
                        hit.why.keyword_score.unwrap_or(0.0),
                        one_line(&hit.record.text, 80)
                    );
                }
            }
        }
        MemoryAction::Stats => {
            println!("{}", serde_json::to_string_pretty(&memory.stats().await?)?);
        }
        MemoryAction::Entity {
            name,
            entity_type,
            description,
            aliases,
        } => {
            let entity = if entity_type.is_none() && description.is_none() && aliases.is_empty() {
                match memory.entity(entity_ref(&name)).await {
                    Ok(found) => found,
                    Err(tabagent_memory::MemoryError::EntityNotFound(_)) => {
                        memory
                            .upsert_entity(NewEntity {
                                name,
                                ..Default::default()
                            })
                            .await?
                    }
                    Err(e) => return Err(e.into()),
                }
            } else {
                memory
                    .upsert_entity(NewEntity {
                        name,
                        entity_type,
                        description,
                        aliases,
                        ..Default::default()
                    })
                    .await?
            };
            println!("{}", serde_json::to_string_pretty(&entity)?);
        }
        MemoryAction::Relate {
            subject,
            relation,
            object,
            evidence,
        } => {
            let relation = memory
                .relate(NewRelation {
                    subject: entity_ref(&subject),
                    relation,
                    object: entity_ref(&object),
                    evidence,
                    source: None,
                    confidence: None,
                })
                .await?;
            println!("{}", serde_json::to_string(&relation)?);
        }
        MemoryAction::Neighbours {
            entity,
            hops,
            relations,
            direction,
        } => {
            let options = WalkOptions {
                relations,
                direction: parse_direction(&direction)?,
                ..Default::default()
            };
            let found = memory
                .neighbourhood(entity_ref(&entity), hops, options)
                .await?;
            println!("{}", serde_json::to_string_pretty(&found)?);
        }
        MemoryAction::Path {
            from,
            to,
            max_hops,
            direction,
        } => {
            let options = WalkOptions {
                direction: parse_direction(&direction)?,
                ..Default::default()
            };
            match memory
                .shortest_path(entity_ref(&from), entity_ref(&to), max_hops, options)
                .await?
            {
                Some(path) => println!("{}", serde_json::to_string_pretty(&path)?),
                None => anyhow::bail!("no path from {from} to {to} within {max_hops} relations"),
            }
        }
        MemoryAction::Serve { .. } => bail!("`memory serve` runs on its own"),
        MemoryAction::Consolidate {
            dry_run,
            similarity,
        } => {
            let options = ConsolidateOptions { similarity };
            let merges = if dry_run {
                memory.duplicate_entities(options).await?
            } else {
                memory.consolidate(options).await?
            };
            for merge in &merges {
                println!("{}", serde_json::to_string(merge)?);
            }
            eprintln!(
                "{} {} group(s) of duplicates",
                if dry_run { "would merge" } else { "merged" },
                merges.len()
            );
        }
    }
    Ok(())
}

/// `tabagent memory serve`: the memory over gRPC until interrupted.
pub async fn serve(
    config: &Config,
    host: &str,
    port: u16,
    api_key: Option<String>,
    tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
    insecure: bool,
) -> anyhow::Result<()> {
    let ip: std::net::IpAddr = host
        .parse()
        .with_context(|| format!("--host `{host}` is not an IP address"))?;
    let mut api_keys: Vec<String> = config
        .server
        .api_keys
        .iter()
        .map(|key| key.expose().to_string())
        .collect();
    api_keys.extend(api_key.filter(|k| !k.is_empty()));
    if api_keys.iter().any(|key| key.trim().len() < 16) {
        bail!("API keys must be at least 16 characters long");
    }
    if !ip.is_loopback() && api_keys.is_empty() {
        bail!("serving the memory on {ip} (off loopback) needs an API key: set server.api_keys");
    }
    if !ip.is_loopback() && tls.is_none() && !insecure {
        bail!(
            "serving the memory on {ip} (off loopback) needs TLS (--tls-cert and --tls-key), or \
             --insecure to send keys and memories in clear"
        );
    }
    let tls = match tls {
        Some((cert, key)) => {
            let read = |path: &std::path::Path| {
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
            };
            Some(tabagent_memory_grpc::TlsIdentity {
                cert_pem: read(&cert)?,
                key_pem: read(&key)?,
            })
        }
        None => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let events = crate::events::Events::open(config)?;
    if let Some(events) = &events {
        crate::events::publisher::start(events.clone());
    }
    let memory = MemoryBackend::open(config).await?.publishing(events);
    let listener = tokio::net::TcpListener::bind((ip, port))
        .await
        .with_context(|| format!("cannot listen on {ip}:{port}"))?;
    let address = listener.local_addr()?;
    // Tests and scripts read this line to find the port.
    println!("memory service listening on {scheme}://{address}");
    let shutdown = async {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match terminate.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
    };
    tabagent_memory_grpc::serve(memory, listener, api_keys, tls, shutdown)
        .await
        .context("the memory service failed")
}

/// An entity id, or else a name.
fn entity_ref(text: &str) -> EntityRef {
    text.parse()
        .map_or_else(|_| EntityRef::Name(text.to_string()), EntityRef::Id)
}

fn parse_direction(text: &str) -> anyhow::Result<Direction> {
    match text {
        "out" => Ok(Direction::Out),
        "in" => Ok(Direction::In),
        "both" => Ok(Direction::Both),
        other => anyhow::bail!("--direction is out, in or both, not `{other}`"),
    }
}

/// One line of `tabagent memory import`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportLine {
    store: String,
    #[serde(flatten)]
    record: ImportRecord,
}

#[derive(serde::Deserialize)]
struct ImportRecord {
    text: String,
    kind: Option<String>,
    data: Option<serde_json::Value>,
    #[serde(default)]
    tags: Vec<String>,
    conversation: Option<String>,
    source: Option<String>,
    role: Option<String>,
    key: Option<String>,
    created_at: Option<i64>,
    vector: Option<Vec<f32>>,
    space: Option<String>,
}

/// Writes each line as it is read; a line's id is printed only once it is committed, so what
/// was printed survives a crash.
async fn import(memory: &MemoryBackend, file: &std::path::Path) -> anyhow::Result<()> {
    use std::io::{BufRead, Write};
    let reader: Box<dyn BufRead> = if file.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let opened =
            std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
        Box::new(std::io::BufReader::new(opened))
    };
    let mut out = std::io::stdout().lock();
    for (n, line) in reader.lines().enumerate() {
        let line = line.context("cannot read the input")?;
        if line.trim().is_empty() {
            continue;
        }
        let at = n + 1;
        let parsed: ImportLine =
            serde_json::from_str(&line).with_context(|| format!("line {at}: not a record"))?;
        let r = parsed.record;
        let embedding = match (r.vector, r.space) {
            (Some(vector), Some(space)) => Some(tabagent_memory::Embedding { space, vector }),
            (None, None) => None,
            _ => bail!("line {at}: `vector` and `space` go together"),
        };
        let store = Store::parse(&parsed.store).with_context(|| format!("line {at}"))?;
        let record = memory
            .insert(
                store,
                NewRecord {
                    text: r.text,
                    kind: r.kind,
                    data: r.data.unwrap_or(serde_json::Value::Null),
                    tags: r.tags,
                    conversation: r.conversation,
                    source: r.source,
                    role: r.role,
                    key: r.key,
                    created_at: r.created_at,
                    embedding,
                },
            )
            .await
            .with_context(|| format!("line {at}"))?;
        writeln!(out, "{}", serde_json::json!({"line": at, "id": record.id}))?;
        out.flush()?;
    }
    Ok(())
}

/// `tabagent db`.
pub fn db(config: &Config, action: DbAction) -> anyhow::Result<()> {
    if config.memory.postgres.is_some() || config.memory.remote.is_some() {
        bail!(
            "`tabagent db` works on the embedded database; this configuration keeps the memory \
             elsewhere (memory.postgres or memory.remote): back it up where it lives (pg_dump)"
        );
    }
    let memory = open(config)?;
    match action {
        DbAction::Backup { file } => {
            let bytes = memory.backup(&file)?;
            println!("backed up {} bytes to {}", bytes, file.display());
        }
        DbAction::Restore { file } => {
            memory.restore(&file)?;
            println!("restored {}", file.display());
        }
        DbAction::Check => {
            let report = memory.check()?;
            for problem in &report.problems {
                eprintln!("{problem}");
            }
            if !report.ok {
                bail!(
                    "the memory has {} problem(s); restore a backup or delete {} to rebuild the vector index",
                    report.problems.len(),
                    config.memory_config().index_dir.display()
                );
            }
            println!(
                "ok: {} records, {} vectors; SQLite, full-text and vector indexes agree",
                report.records, report.vectors
            );
        }
    }
    Ok(())
}
