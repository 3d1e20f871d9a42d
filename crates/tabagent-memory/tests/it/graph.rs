use tabagent_memory::{
    Change, ConsolidateOptions, Direction, Embedding, EntityRef, Filter, Memory, MemoryConfig,
    MemoryError, NewEntity, NewRecord, NewRelation, Order, SearchRequest, Store, WalkOptions,
};

use crate::{fresh, text};

fn name(n: &str) -> EntityRef {
    EntityRef::Name(n.to_string())
}

fn entity(n: &str, kind: Option<&str>) -> NewEntity {
    NewEntity {
        name: n.to_string(),
        entity_type: kind.map(str::to_string),
        ..Default::default()
    }
}

fn relation(subject: &str, rel: &str, object: &str) -> NewRelation {
    NewRelation {
        subject: name(subject),
        relation: rel.to_string(),
        object: name(object),
        evidence: None,
        source: None,
        confidence: None,
    }
}

fn names_of(entities: &[tabagent_memory::Reached]) -> Vec<(String, u32)> {
    entities
        .iter()
        .map(|r| (r.entity.name.clone(), r.hops))
        .collect()
}

#[test]
fn an_entity_is_one_per_name_whatever_the_case_and_keeps_every_alias() {
    let (_dir, memory) = fresh();
    let first = memory
        .upsert_entity(NewEntity {
            aliases: vec!["NYC".into()],
            ..entity("New York City", Some("place"))
        })
        .unwrap();
    let again = memory
        .upsert_entity(NewEntity {
            description: Some("The most populous city in the United States".into()),
            aliases: vec!["The Big Apple".into(), "nyc".into()],
            ..entity("  new   YORK city ", Some("city"))
        })
        .unwrap();
    assert_eq!(again.id, first.id);
    assert_eq!(again.name, "New York City");
    assert_eq!(
        again.entity_type.as_deref(),
        Some("place"),
        "a type is kept once set"
    );
    assert_eq!(again.aliases, vec!["NYC", "The Big Apple"]);
    assert!(again.description.as_deref().unwrap().contains("populous"));
    // An alias finds it, and writing under an alias adds to it rather than making another.
    assert_eq!(memory.entity(&name("the big apple")).unwrap().id, first.id);
    let by_alias = memory.upsert_entity(entity("NYC", None)).unwrap();
    assert_eq!(by_alias.id, first.id);
    // It is a knowledge record, found by keyword like any other.
    let hits = memory
        .search(&SearchRequest::keyword("populous city"))
        .unwrap();
    assert_eq!(hits.hits.len(), 1);
    assert_eq!(hits.hits[0].record.id, first.id);
    assert_eq!(hits.hits[0].record.store, Store::Knowledge);
    assert_eq!(hits.hits[0].record.kind, "entity");
}

#[test]
fn relations_name_their_ends_cite_their_evidence_and_are_kept_once_per_evidence() {
    let (_dir, memory) = fresh();
    let passage = memory
        .insert(
            Store::Knowledge,
            NewRecord {
                kind: Some("passage".into()),
                ..text("Ada Lovelace worked with Charles Babbage on the Analytical Engine.")
            },
        )
        .unwrap();
    let cited = NewRelation {
        evidence: Some(passage.id),
        confidence: Some(0.9),
        ..relation("Ada Lovelace", "Worked With", "Charles Babbage")
    };
    let first = memory.relate(cited.clone()).unwrap();
    let again = memory.relate(cited.clone()).unwrap();
    assert_eq!(
        first, again,
        "the same relation from the same evidence is one relation"
    );
    assert_eq!(first.relation, "worked_with");
    assert_eq!(first.evidence, Some(passage.id));
    assert_eq!(first.confidence, Some(0.9));
    let ada = memory.entity(&name("ada lovelace")).unwrap();
    let charles = memory.entity(&name("Charles Babbage")).unwrap();
    assert_eq!((first.subject, first.object), (ada.id, charles.id));
    assert_eq!(
        ada.entity_type, None,
        "entities a relation creates are untyped"
    );
    // From other evidence it is another assertion of the same fact.
    let other = memory
        .relate(NewRelation {
            evidence: None,
            ..cited
        })
        .unwrap();
    assert_ne!(other.id, first.id);
    let wrote = memory
        .relate(NewRelation {
            evidence: Some(passage.id),
            ..relation("Ada Lovelace", "wrote about", "Analytical Engine")
        })
        .unwrap();

    // Evidence that is deleted leaves its relations, uncited (one already held uncited stays
    // one); an entity that is deleted takes its relations.
    memory.delete(passage.id).unwrap();
    assert_eq!(memory.relation(wrote.id).unwrap().evidence, None);
    assert!(matches!(
        memory.relation(first.id),
        Err(MemoryError::RelationNotFound(id)) if id == first.id
    ));
    assert_eq!(memory.relation(other.id).unwrap().evidence, None);
    memory.delete(charles.id).unwrap();
    assert!(matches!(
        memory.relation(other.id),
        Err(MemoryError::RelationNotFound(id)) if id == other.id
    ));
    let around = memory
        .neighbourhood(&EntityRef::Id(ada.id), 1, &WalkOptions::default())
        .unwrap();
    assert_eq!(around.entities.len(), 2, "Ada and the engine remain");
    assert_eq!(around.relations, vec![memory.relation(wrote.id).unwrap()]);
}

/// A → B → C → D, A → E, and X → Y apart.
fn chain(memory: &Memory) {
    for (s, r, o) in [
        ("A", "next", "B"),
        ("B", "next", "C"),
        ("C", "next", "D"),
        ("A", "likes", "E"),
        ("X", "next", "Y"),
    ] {
        memory.relate(relation(s, r, o)).unwrap();
    }
}

#[test]
fn a_neighbourhood_reaches_k_hops_by_the_relations_and_directions_asked() {
    let (_dir, memory) = fresh();
    chain(&memory);
    let two = memory
        .neighbourhood(&name("a"), 2, &WalkOptions::default())
        .unwrap();
    assert_eq!(
        names_of(&two.entities),
        vec![
            ("A".into(), 0),
            ("B".into(), 1),
            ("E".into(), 1),
            ("C".into(), 2)
        ]
    );
    assert_eq!(two.relations.len(), 3);
    assert!(!two.truncated);

    let only_next = WalkOptions {
        relations: vec!["Next".into()],
        ..Default::default()
    };
    let three = memory.neighbourhood(&name("A"), 3, &only_next).unwrap();
    assert_eq!(
        names_of(&three.entities),
        vec![
            ("A".into(), 0),
            ("B".into(), 1),
            ("C".into(), 2),
            ("D".into(), 3)
        ]
    );

    let inward = WalkOptions {
        direction: Direction::In,
        ..Default::default()
    };
    let into_c = memory.neighbourhood(&name("C"), 6, &inward).unwrap();
    assert_eq!(
        names_of(&into_c.entities),
        vec![("C".into(), 0), ("B".into(), 1), ("A".into(), 2)]
    );
    let outward = WalkOptions {
        direction: Direction::Out,
        ..Default::default()
    };
    let from_c = memory.neighbourhood(&name("C"), 6, &outward).unwrap();
    assert_eq!(
        names_of(&from_c.entities),
        vec![("C".into(), 0), ("D".into(), 1)]
    );

    let capped = WalkOptions {
        max_entities: 2,
        ..Default::default()
    };
    let cut = memory.neighbourhood(&name("A"), 3, &capped).unwrap();
    assert_eq!(cut.entities.len(), 2);
    assert!(cut.truncated);
    assert!(cut
        .relations
        .iter()
        .all(|r| cut.entities.iter().any(|e| e.entity.id == r.subject)
            && cut.entities.iter().any(|e| e.entity.id == r.object)));

    let zero = memory
        .neighbourhood(&name("A"), 0, &WalkOptions::default())
        .unwrap();
    assert_eq!(names_of(&zero.entities), vec![("A".into(), 0)]);
}

#[test]
fn the_shortest_path_takes_the_fewest_relations_and_none_is_found_across_a_gap() {
    let (_dir, memory) = fresh();
    chain(&memory);
    // A shortcut A → D makes the path one hop.
    let long = memory
        .shortest_path(&name("A"), &name("D"), 6, &WalkOptions::default())
        .unwrap()
        .unwrap();
    let hops: Vec<&str> = long.entities.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(hops, vec!["A", "B", "C", "D"]);
    assert_eq!(long.relations.len(), 3);
    for (i, r) in long.relations.iter().enumerate() {
        let ends = [long.entities[i].id, long.entities[i + 1].id];
        assert!(ends.contains(&r.subject) && ends.contains(&r.object));
    }
    memory.relate(relation("A", "skips_to", "D")).unwrap();
    let short = memory
        .shortest_path(&name("A"), &name("D"), 6, &WalkOptions::default())
        .unwrap()
        .unwrap();
    assert_eq!(short.relations.len(), 1);
    assert_eq!(short.relations[0].relation, "skips_to");
    // Against the arrows there is no way from D to A; either way there is.
    let out = WalkOptions {
        direction: Direction::Out,
        ..Default::default()
    };
    assert!(memory
        .shortest_path(&name("D"), &name("A"), 6, &out)
        .unwrap()
        .is_none());
    assert!(memory
        .shortest_path(&name("D"), &name("A"), 6, &WalkOptions::default())
        .unwrap()
        .is_some());
    // Disconnected, or too far for the hops allowed.
    assert!(memory
        .shortest_path(&name("A"), &name("Y"), 12, &WalkOptions::default())
        .unwrap()
        .is_none());
    let only_next = WalkOptions {
        relations: vec!["next".into()],
        ..Default::default()
    };
    assert!(memory
        .shortest_path(&name("A"), &name("D"), 2, &only_next)
        .unwrap()
        .is_none());
    let same = memory
        .shortest_path(&name("A"), &name("A"), 1, &WalkOptions::default())
        .unwrap()
        .unwrap();
    assert_eq!(same.entities.len(), 1);
    assert!(same.relations.is_empty());
}

#[test]
fn merging_moves_relations_collapses_duplicates_and_keeps_every_name() {
    let (_dir, memory) = fresh();
    memory
        .relate(relation("Paris", "capital_of", "France"))
        .unwrap();
    memory
        .relate(relation("Paris, France", "capital_of", "France"))
        .unwrap();
    memory
        .relate(relation("Paris, France", "twinned_with", "Rome"))
        .unwrap();
    memory
        .relate(relation("Paris", "same_as", "Paris, France"))
        .unwrap();
    let paris = memory.entity(&name("Paris")).unwrap();
    let other = memory.entity(&name("Paris, France")).unwrap();
    let outcomes = memory
        .apply(vec![Change::Merge {
            kept: paris.id,
            merged: vec![other.id],
        }])
        .unwrap();
    assert_eq!(outcomes.len(), 1);
    assert!(matches!(
        memory.get(other.id),
        Err(MemoryError::NotFound(_))
    ));
    let kept = memory.entity(&name("paris, france")).unwrap();
    assert_eq!(
        kept.id, paris.id,
        "the merged name now finds the kept entity"
    );
    assert_eq!(kept.aliases, vec!["Paris, France"]);
    let around = memory
        .neighbourhood(&EntityRef::Id(paris.id), 1, &WalkOptions::default())
        .unwrap();
    let mut rels: Vec<&str> = around
        .relations
        .iter()
        .map(|r| r.relation.as_str())
        .collect();
    rels.sort();
    assert_eq!(
        rels,
        vec!["capital_of", "twinned_with"],
        "duplicate and self relations are gone"
    );

    for bad in [vec![], vec![paris.id], vec![other.id]] {
        let err = memory
            .apply(vec![Change::Merge {
                kept: paris.id,
                merged: bad,
            }])
            .unwrap_err();
        assert!(err.is_callers_fault(), "{err}");
    }
}

#[test]
fn consolidation_merges_loose_name_and_alias_duplicates_but_not_across_types() {
    let (_dir, memory) = fresh();
    for e in [
        entity("The Beatles", Some("band")),
        entity("Beatles.", None),
        entity("Apple", Some("company")),
        entity("apple inc", Some("company")),
        entity("an apple", Some("fruit")),
        NewEntity {
            aliases: vec!["Apple Inc.".into()],
            ..entity("Apple Computer", Some("company"))
        },
    ] {
        memory.upsert_entity(e).unwrap();
    }
    memory
        .relate(relation("Beatles.", "from", "Liverpool"))
        .unwrap();
    let planned = memory
        .duplicate_entities(&ConsolidateOptions { similarity: None })
        .unwrap();
    assert_eq!(planned.len(), 2, "{planned:?}");
    let before = memory.stats().unwrap();
    let merges = memory
        .consolidate(&ConsolidateOptions { similarity: None })
        .unwrap();
    assert_eq!(merges, planned);
    let after = memory.stats().unwrap();
    let knowledge = |s: &tabagent_memory::Stats| s.stores[1].records;
    assert_eq!(knowledge(&before) - knowledge(&after), 2);

    let beatles = memory.entity(&name("the beatles")).unwrap();
    assert_eq!(beatles.entity_type.as_deref(), Some("band"));
    assert!(beatles.aliases.contains(&"Beatles.".to_string()));
    let from = memory
        .shortest_path(
            &EntityRef::Id(beatles.id),
            &name("Liverpool"),
            1,
            &WalkOptions::default(),
        )
        .unwrap();
    assert!(
        from.is_some(),
        "the merged entity's relation moved to the kept one"
    );
    // `apple inc` and `Apple Computer` (alias `Apple Inc.`) are one company; `an apple` the
    // fruit and `Apple` the company share a loose name but not a type.
    let company = memory.entity(&name("Apple Computer")).unwrap();
    assert_eq!(memory.entity(&name("apple inc")).unwrap().id, company.id);
    assert_ne!(memory.entity(&name("an apple")).unwrap().id, company.id);
    assert!(memory
        .duplicate_entities(&ConsolidateOptions { similarity: None })
        .unwrap()
        .is_empty());
}

#[test]
fn consolidation_by_similarity_merges_entities_whose_vectors_are_close() {
    let (_dir, memory) = fresh();
    let with = |n: &str, v: Vec<f32>| NewEntity {
        embedding: Some(Embedding {
            space: "s".into(),
            vector: v,
        }),
        ..entity(n, Some("person"))
    };
    let a = memory
        .upsert_entity(with("Robert Smith", vec![1.0, 0.0, 0.1]))
        .unwrap();
    let b = memory
        .upsert_entity(with("Bob Smith", vec![0.99, 0.0, 0.12]))
        .unwrap();
    let c = memory
        .upsert_entity(with("Alice Jones", vec![0.0, 1.0, 0.0]))
        .unwrap();
    assert!(memory
        .duplicate_entities(&ConsolidateOptions { similarity: None })
        .unwrap()
        .is_empty());
    let merges = memory
        .consolidate(&ConsolidateOptions {
            similarity: Some(0.99),
        })
        .unwrap();
    assert_eq!(merges.len(), 1);
    assert_eq!(
        (merges[0].kept, merges[0].merged.clone()),
        (a.id, vec![b.id])
    );
    assert_eq!(memory.entity(&name("bob smith")).unwrap().id, a.id);
    assert!(memory.entity(&EntityRef::Id(c.id)).is_ok());
    let report = memory.check().unwrap();
    assert!(
        report.ok,
        "the vector index agrees after the merge: {:?}",
        report.problems
    );
    let err = memory
        .duplicate_entities(&ConsolidateOptions {
            similarity: Some(1.5),
        })
        .unwrap_err();
    assert_eq!(err.param(), Some("similarity"));
}

#[test]
fn bad_graph_input_is_refused_and_a_failing_change_undoes_its_group() {
    let (_dir, memory) = fresh();
    let err = memory.upsert_entity(entity("   ", None)).unwrap_err();
    assert_eq!(err.param(), Some("name"));
    let err = memory.relate(relation("a", " _ ", "b")).unwrap_err();
    assert_eq!(err.param(), Some("relation"));
    let err = memory
        .relate(NewRelation {
            confidence: Some(1.5),
            ..relation("a", "r", "b")
        })
        .unwrap_err();
    assert_eq!(err.param(), Some("confidence"));
    let err = memory
        .relate(NewRelation {
            evidence: Some(999),
            ..relation("a", "r", "b")
        })
        .unwrap_err();
    assert_eq!(err.param(), Some("evidence"));
    let err = memory
        .neighbourhood(&name("nobody"), 1, &WalkOptions::default())
        .unwrap_err();
    assert!(matches!(err, MemoryError::EntityNotFound(_)) && err.is_callers_fault());
    let err = memory
        .neighbourhood(&name("nobody"), 7, &WalkOptions::default())
        .unwrap_err();
    assert_eq!(err.param(), Some("hops"));
    let err = memory
        .relate(NewRelation {
            subject: EntityRef::Id(12345),
            ..relation("a", "r", "b")
        })
        .unwrap_err();
    assert!(matches!(err, MemoryError::EntityNotFound(_)));
    // Entities are not written as plain records: their names would be missed.
    let err = memory
        .insert(
            Store::Knowledge,
            NewRecord {
                kind: Some("entity".into()),
                ..text("sneaky")
            },
        )
        .unwrap_err();
    assert_eq!(err.param(), Some("kind"));
    // A group with one bad change leaves nothing behind.
    let err = memory
        .apply(vec![
            Change::Entity {
                entity: entity("Lonely", None),
            },
            Change::Relate {
                relation: relation("Lonely", "", "Nobody"),
            },
        ])
        .unwrap_err();
    assert!(err.is_callers_fault());
    assert!(memory.entity(&name("Lonely")).is_err());
    let all = memory
        .list(&Filter::default(), Order::Newest, 100, None)
        .unwrap();
    assert!(all.records.is_empty(), "{:?}", all.records);
}

#[test]
fn a_version_1_database_gains_the_graph_when_opened() {
    let dir = tempfile::tempdir().unwrap();
    let config = MemoryConfig::at(dir.path());
    let kept = {
        let memory = Memory::open(&config).unwrap();
        memory
            .insert(Store::Knowledge, text("from before the graph"))
            .unwrap()
    };
    {
        let conn = rusqlite::Connection::open(&config.path).unwrap();
        conn.execute_batch(
            "DROP TRIGGER relations_evidence_gone; DROP TABLE relations; DROP TABLE entity_names;
             PRAGMA user_version = 1;",
        )
        .unwrap();
    }
    let memory = Memory::open(&config).unwrap();
    assert_eq!(memory.get(kept.id).unwrap().text, "from before the graph");
    let r = memory.relate(relation("old", "meets", "new")).unwrap();
    assert_eq!(memory.relation(r.id).unwrap(), r);
}
