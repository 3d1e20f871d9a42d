//! Choosing providers, failing over before the first token and never after it, breakers and
//! Retry-After.

use futures_util::StreamExt;
use tabagent_core::{ChatMessage, GenerationEvent, GenerationParams, InferenceError, Role};
use tabagent_router::{
    BreakerState, ChatRequest, ProviderConfig, RouteError, Router, RouterConfig, Tier,
};

use tabagent_testhub::engine::{Behaviour, FakeEngine as Fake};

fn provider(name: &str, fake: &Fake, models: &[&str]) -> ProviderConfig {
    ProviderConfig {
        name: name.to_string(),
        base_url: fake.base_url.clone(),
        api_key_env: None,
        models: models.iter().map(|m| m.to_string()).collect(),
        tier: Tier::Standard,
        capabilities: Default::default(),
        cost: Default::default(),
        weight: 1.0,
        max_concurrency: None,
    }
}

fn router(providers: Vec<ProviderConfig>, tweak: impl FnOnce(&mut RouterConfig)) -> Router {
    // The same order for the same health, so that each test knows who is tried first;
    // `exploration_learns_which_provider_answers_better` turns sampling on.
    let mut config = RouterConfig {
        providers,
        explore: false,
        ..RouterConfig::default()
    };
    tweak(&mut config);
    Router::new(config, None, reqwest::Client::new()).unwrap()
}

fn hello() -> ChatRequest {
    ChatRequest {
        messages: vec![ChatMessage::new(Role::User, "hello")],
        params: GenerationParams::default(),
        trace: None,
        fixed: Default::default(),
        prompt: None,
        ticket: None,
    }
}

/// Every event of a routed answer.
async fn answer(
    router: &Router,
    model: &str,
) -> Result<(String, Vec<GenerationEvent>), RouteError> {
    let mut routed = router.chat(model, hello()).await?;
    let mut events = Vec::new();
    while let Some(event) = routed.events.next().await {
        events.push(event);
    }
    Ok((routed.target.provider, events))
}

fn text(events: &[GenerationEvent]) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            GenerationEvent::Text(t) => Some(t.as_str()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn models_aliases_and_provider_prefixes_reach_the_right_engine() {
    let a = Fake::start(vec![Behaviour::Answer(vec!["from ", "a"])])
        .await
        .unwrap();
    let b = Fake::start(vec![Behaviour::Answer(vec!["from b"])])
        .await
        .unwrap();
    let router = router(
        vec![
            provider("a", &a, &["llama-3"]),
            provider("b", &b, &["qwen", "llama-3"]),
        ],
        |c| {
            c.aliases.insert("smart".into(), "b/qwen".into());
        },
    );
    let (who, events) = answer(&router, "qwen").await.unwrap();
    assert_eq!((who.as_str(), text(&events).as_str()), ("b", "from b"));
    assert!(
        matches!(events.last(), Some(GenerationEvent::Finished { usage, .. }) if usage.completion_tokens == 1)
    );
    let (who, events) = answer(&router, "llama-3").await.unwrap();
    assert_eq!((who.as_str(), text(&events).as_str()), ("a", "from a"));
    let (who, _) = answer(&router, "smart").await.unwrap();
    assert_eq!(who, "b");
    let (who, _) = answer(&router, "b/llama-3").await.unwrap();
    assert_eq!(who, "b");
    assert_eq!(b.models(), vec!["qwen", "qwen", "llama-3"]);
    assert!(matches!(
        router.chat("gpt-9", hello()).await.err(),
        Some(RouteError::UnknownModel(m)) if m == "gpt-9"
    ));
}

#[tokio::test]
async fn a_failing_provider_is_failed_over_and_then_tried_after_the_healthy_one() {
    let a = Fake::start(vec![Behaviour::Status(500)]).await.unwrap();
    let b = Fake::start(vec![Behaviour::Answer(vec!["ok"])])
        .await
        .unwrap();
    let mut preferred = provider("a", &a, &["m"]);
    preferred.weight = 2.0;
    let router = router(vec![preferred, provider("b", &b, &["m"])], |_| {});
    for _ in 0..3 {
        let (who, events) = answer(&router, "m").await.unwrap();
        assert_eq!((who.as_str(), text(&events).as_str()), ("b", "ok"));
    }
    assert_eq!(a.requests(), 1, "after failing, a went behind b");
    assert_eq!(b.requests(), 3);
    let status = router.status();
    assert_eq!(status[0].error_rate, Some(1.0));
    assert_eq!(status[1].error_rate, Some(0.0));
    assert!(status[1].ttft_seconds.is_some());
}

#[tokio::test]
async fn a_breaker_opens_after_consecutive_failures_and_nothing_is_sent_while_it_is_open() {
    let a = Fake::start(vec![Behaviour::Status(500)]).await.unwrap();
    let router = router(vec![provider("a", &a, &["m"])], |c| {
        c.breaker_failures = 2;
        c.breaker_open_secs = 3600.0;
    });
    for _ in 0..2 {
        assert!(matches!(
            router.chat("m", hello()).await.err(),
            Some(RouteError::Exhausted { .. })
        ));
    }
    assert!(matches!(
        router.breaker("a"),
        Some(BreakerState::Open { .. })
    ));
    match router.chat("m", hello()).await.err() {
        Some(RouteError::Exhausted { tried, .. }) => {
            assert_eq!(tried, vec!["a: circuit open".to_string()])
        }
        other => panic!("expected an open circuit, got {other:?}"),
    }
    assert_eq!(a.requests(), 2);
    assert_eq!(router.status()[0].breaker, "open");
}

#[tokio::test]
async fn a_429_is_honoured_for_its_retry_after_without_opening_the_breaker() {
    let a = Fake::start(vec![Behaviour::RateLimited(3600)])
        .await
        .unwrap();
    let b = Fake::start(vec![Behaviour::Answer(vec!["ok"])])
        .await
        .unwrap();
    let router = router(
        vec![provider("a", &a, &["m"]), provider("b", &b, &["m"])],
        |_| {},
    );
    for _ in 0..3 {
        assert_eq!(answer(&router, "m").await.unwrap().0, "b");
    }
    assert_eq!(a.requests(), 1);
    assert_eq!(
        router.breaker("a"),
        Some(BreakerState::Closed { failures: 0 })
    );
    // With nowhere else to go, the caller hears when to come back.
    let only_a = self::router(vec![provider("a", &a, &["m"])], |_| {});
    let _ = answer(&only_a, "m").await;
    match answer(&only_a, "m").await {
        Err(RouteError::Exhausted {
            retry_after: Some(wait),
            ..
        }) => assert!(wait.as_secs() > 3000, "{wait:?}"),
        other => panic!("expected a rate limit, got {other:?}"),
    }
}

#[tokio::test]
async fn a_stream_that_breaks_after_its_first_token_fails_and_is_never_resumed_elsewhere() {
    let a = Fake::start(vec![Behaviour::DropAfter(vec!["Hel", "lo"])])
        .await
        .unwrap();
    let b = Fake::start(vec![Behaviour::Answer(vec!["Hello again"])])
        .await
        .unwrap();
    let router = router(
        vec![provider("a", &a, &["m"]), provider("b", &b, &["m"])],
        |_| {},
    );
    let mut routed = router.chat("m", hello()).await.unwrap();
    assert_eq!(routed.target.provider, "a");
    // The first token has reached the caller: now the connection breaks.
    a.break_stream();
    let mut events = Vec::new();
    while let Some(event) = routed.events.next().await {
        events.push(event);
    }
    assert_eq!(text(&events), "Hello");
    assert!(
        matches!(events.last(), Some(GenerationEvent::Failed(_))),
        "{events:?}"
    );
    assert_eq!(b.requests(), 0, "nothing was sent twice");
}

#[tokio::test]
async fn the_callers_mistake_is_returned_at_once_not_retried() {
    let a = Fake::start(vec![Behaviour::Status(400)]).await.unwrap();
    let b = Fake::start(vec![Behaviour::Answer(vec!["ok"])])
        .await
        .unwrap();
    let router = router(
        vec![provider("a", &a, &["m"]), provider("b", &b, &["m"])],
        |_| {},
    );
    match router.chat("m", hello()).await.err() {
        Some(RouteError::Caller(InferenceError::InvalidRequest { message, .. })) => {
            assert!(message.contains("fake says 400"), "{message}")
        }
        other => panic!("expected the caller's error, got {other:?}"),
    }
    assert_eq!(b.requests(), 0);
    assert_eq!(
        router.breaker("a"),
        Some(BreakerState::Closed { failures: 0 })
    );
}

#[tokio::test]
async fn a_provider_silent_past_the_first_token_timeout_is_abandoned_for_the_next() {
    let a = Fake::start(vec![Behaviour::Stall]).await.unwrap();
    let b = Fake::start(vec![Behaviour::Answer(vec!["ok"])])
        .await
        .unwrap();
    let router = router(
        vec![provider("a", &a, &["m"]), provider("b", &b, &["m"])],
        |c| {
            c.first_token_timeout_secs = 0.3;
        },
    );
    let (who, events) = answer(&router, "m").await.unwrap();
    assert_eq!((who.as_str(), text(&events).as_str()), ("b", "ok"));
    assert_eq!(
        router.breaker("a"),
        Some(BreakerState::Closed { failures: 1 })
    );
}

#[tokio::test]
async fn when_every_provider_fails_the_error_says_what_each_did() {
    let a = Fake::start(vec![Behaviour::Status(503)]).await.unwrap();
    let b = Fake::start(vec![Behaviour::Status(502)]).await.unwrap();
    let router = router(
        vec![provider("a", &a, &["m"]), provider("b", &b, &["m"])],
        |_| {},
    );
    match router.chat("m", hello()).await.err() {
        Some(RouteError::Exhausted { tried, retry_after }) => {
            assert_eq!(tried.len(), 2, "{tried:?}");
            assert!(
                tried[0].contains("503") && tried[1].contains("502"),
                "{tried:?}"
            );
            assert_eq!(retry_after, None);
        }
        other => panic!("expected every provider to fail, got {other:?}"),
    }
}

#[tokio::test]
async fn routes_pick_by_tier_and_capability_and_bad_configuration_is_refused() {
    let small = Fake::start(vec![Behaviour::Answer(vec!["small"])])
        .await
        .unwrap();
    let big = Fake::start(vec![Behaviour::Answer(vec!["big"])])
        .await
        .unwrap();
    let mut fast = provider("small", &small, &["tiny"]);
    fast.tier = Tier::Fast;
    let mut expert = provider("big", &big, &["huge"]);
    expert.tier = Tier::Expert;
    expert.capabilities.tools = true;
    let router = router(vec![fast.clone(), expert.clone()], |c| {
        c.routes.insert(
            "expert-reasoning".into(),
            tabagent_router::RouteConfig {
                tier: Tier::Expert,
                capabilities: vec!["tools".into()],
                ..Default::default()
            },
        );
    });
    assert_eq!(answer(&router, "fast").await.unwrap().0, "small");
    assert_eq!(answer(&router, "expert-reasoning").await.unwrap().0, "big");
    assert_eq!(big.models(), vec!["huge"]);
    assert_eq!(router.candidates("auto").len(), 2);

    let bad = RouterConfig {
        providers: vec![fast.clone(), fast],
        ..RouterConfig::default()
    };
    let err = Router::new(bad, None, reqwest::Client::new()).unwrap_err();
    assert!(
        err.to_string().contains("two providers are named `small`"),
        "{err}"
    );
    let mut keyed = expert;
    keyed.api_key_env = Some("TABAGENT_TEST_KEY_THAT_IS_NOT_SET".into());
    let err = Router::new(
        RouterConfig {
            providers: vec![keyed],
            ..RouterConfig::default()
        },
        None,
        reqwest::Client::new(),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("TABAGENT_TEST_KEY_THAT_IS_NOT_SET"),
        "{err}"
    );
}

#[tokio::test]
async fn exploration_learns_which_provider_answers_better() {
    let slow = Fake::start(vec![Behaviour::Slow(200, vec!["slow"])])
        .await
        .unwrap();
    let quick = Fake::start(vec![Behaviour::Answer(vec!["quick"])])
        .await
        .unwrap();
    let router = router(
        vec![
            provider("slow", &slow, &["m"]),
            provider("quick", &quick, &["m"]),
        ],
        |c| {
            c.explore = true;
            c.ttft_target_secs = 0.05;
            c.exploration_seed = Some(42);
        },
    );
    for _ in 0..40 {
        answer(&router, "m").await.unwrap();
    }
    assert!(
        quick.requests() >= 30,
        "quick {} slow {}",
        quick.requests(),
        slow.requests()
    );
    assert!(slow.requests() >= 1, "the slower one was tried");
    let arms = router.analytics().arms();
    assert_eq!(arms[0].provider, "quick", "{arms:?}");
    assert!(arms[0].mean() > arms[1].mean());
}

#[tokio::test]
async fn a_full_provider_is_passed_over_for_one_with_room_and_preferred_again_once_free() {
    let limited = Fake::start(vec![
        Behaviour::Held(vec!["held"]),
        Behaviour::Answer(vec!["limited"]),
    ])
    .await
    .unwrap();
    let spare = Fake::start(vec![Behaviour::Answer(vec!["spare"])])
        .await
        .unwrap();
    let mut preferred = provider("limited", &limited, &["m"]);
    preferred.weight = 2.0;
    preferred.max_concurrency = Some(1);
    let router = router(vec![preferred, provider("spare", &spare, &["m"])], |_| {});
    let mut holding = router.chat("m", hello()).await.unwrap();
    assert_eq!(holding.target.provider, "limited");
    assert_eq!(
        holding.events.next().await,
        Some(GenerationEvent::Text("held".to_string()))
    );
    let (who, events) = answer(&router, "m").await.unwrap();
    assert_eq!((who.as_str(), text(&events).as_str()), ("spare", "spare"));
    assert_eq!(
        limited.requests(),
        1,
        "the full provider was not sent a second request"
    );
    limited.release();
    while holding.events.next().await.is_some() {}
    drop(holding);
    let (who, _) = answer(&router, "m").await.unwrap();
    assert_eq!(who, "limited");
}

#[tokio::test]
async fn probes_open_a_dead_providers_breaker_before_any_request_and_close_it_once_it_is_back() {
    // A port with nothing listening (yet).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let live = Fake::start(vec![Behaviour::Answer(vec!["live"])])
        .await
        .unwrap();
    let mut dead = provider("dead", &live, &["m"]);
    dead.base_url = format!("http://127.0.0.1:{port}/v1");
    dead.weight = 2.0;
    let router = router(vec![dead, provider("live", &live, &["m"])], |c| {
        c.breaker_failures = 2;
    });
    router.probe().await;
    assert_eq!(
        router.breaker("dead"),
        Some(BreakerState::Closed { failures: 1 })
    );
    router.probe().await;
    assert!(matches!(
        router.breaker("dead"),
        Some(BreakerState::Open { .. })
    ));
    assert_eq!(
        router.breaker("live"),
        Some(BreakerState::Closed { failures: 0 })
    );
    let (who, _) = answer(&router, "m").await.unwrap();
    assert_eq!(who, "live", "the dead provider was skipped without a try");
    assert!(
        answer(&router, "dead/m").await.is_err(),
        "its open breaker refuses requests"
    );

    let back = Fake::start_on(port, vec![Behaviour::Answer(vec!["back"])])
        .await
        .unwrap();
    // Its breaker is open for 30 s more, but a probe that is answered lets the next request
    // through as its trial, which closes it.
    assert!(answer(&router, "dead/m").await.is_err());
    router.probe().await;
    let (who, events) = answer(&router, "dead/m").await.unwrap();
    assert_eq!((who.as_str(), text(&events).as_str()), ("dead", "back"));
    assert_eq!(back.requests(), 1);
    assert_eq!(
        router.breaker("dead"),
        Some(BreakerState::Closed { failures: 0 })
    );
}

#[tokio::test]
async fn each_try_continues_the_callers_trace_with_a_span_of_its_own() {
    let failing = Fake::start(vec![Behaviour::Status(500)]).await.unwrap();
    let answering = Fake::start(vec![Behaviour::Answer(vec!["ok"])])
        .await
        .unwrap();
    let mut first = provider("failing", &failing, &["m"]);
    first.weight = 2.0;
    let router = router(
        vec![first, provider("answering", &answering, &["m"])],
        |_| {},
    );
    let trace = tabagent_router::TraceParent::parse(
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    )
    .unwrap();
    let mut request = hello();
    request.trace = Some(trace);
    let mut routed = router.chat("m", request).await.unwrap();
    while routed.events.next().await.is_some() {}
    let sent: Vec<String> = failing
        .traceparents()
        .into_iter()
        .chain(answering.traceparents())
        .map(|t| t.expect("a traceparent"))
        .collect();
    assert_eq!(sent.len(), 2);
    for header in &sent {
        let hop = tabagent_router::TraceParent::parse(header).unwrap();
        assert_eq!(hop.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(hop, trace, "a new span per hop");
    }
    assert_ne!(sent[0], sent[1], "each try is its own span");
}

#[tokio::test]
async fn a_routes_parameter_sets_are_arms_the_router_learns_between() {
    let fake = Fake::start(vec![Behaviour::Answer(vec!["ok"])])
        .await
        .unwrap();
    let router = router(vec![provider("p", &fake, &["m"])], |c| {
        c.routes.insert(
            "code".to_string(),
            tabagent_router::RouteConfig {
                parameter_sets: vec![
                    tabagent_router::ParameterSet {
                        name: "warm".to_string(),
                        temperature: Some(0.9),
                        max_tokens: Some(100),
                        ..Default::default()
                    },
                    tabagent_router::ParameterSet {
                        name: "cold".to_string(),
                        temperature: Some(0.1),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            },
        );
    });
    let ask = |fixed: &[&'static str]| {
        let mut request = hello();
        request.params.sampling.temperature = 0.5;
        request.fixed = fixed.iter().copied().collect();
        router.chat("code", request)
    };
    // Nothing learnt: the first set; its settings replace what the caller did not fix.
    let mut routed = ask(&[]).await.unwrap();
    while routed.events.next().await.is_some() {}
    assert_eq!(routed.arm.parameter_set.as_deref(), Some("warm"));
    assert_eq!(routed.arm.task.as_deref(), Some("code"));
    let body = fake.bodies().pop().unwrap();
    assert_eq!(
        (body["temperature"].as_f64(), body["max_tokens"].as_u64()),
        (Some(0.9f32 as f64), Some(100))
    );
    // Feedback says `warm` answers this task badly: `cold` is chosen next.
    router.analytics().answered("a1", &routed.arm);
    router.analytics().feedback("a1", 0.0).unwrap();
    router.analytics().feedback("a1", 0.0).unwrap();
    let mut routed = ask(&["temperature"]).await.unwrap();
    while routed.events.next().await.is_some() {}
    assert_eq!(routed.arm.parameter_set.as_deref(), Some("cold"));
    let body = fake.bodies().pop().unwrap();
    assert_eq!(
        body["temperature"].as_f64(),
        Some(0.5),
        "the caller's own temperature stays"
    );
    let best = router.analytics().best_for_task("code").unwrap();
    assert_eq!(best.parameter_set.as_deref(), Some("cold"));
    // A plain model request uses no set.
    let (_, _) = answer(&router, "m").await.unwrap();
    assert_eq!(
        fake.bodies().pop().unwrap()["temperature"].as_f64(),
        Some(f64::from(GenerationParams::default().sampling.temperature))
    );
}
