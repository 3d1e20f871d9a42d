//! Chat templates: real ones render as Hugging Face does; hostile ones fail cleanly.

use tabagent_core::{ChatMessage, Role};
use tabagent_models::chat_template::{ChatTemplate, TemplateError};

fn conversation() -> Vec<ChatMessage> {
    vec![
        ChatMessage::new(Role::System, "Be brief."),
        ChatMessage::new(Role::User, "Hi there"),
        ChatMessage::new(Role::Assistant, "Hello!"),
        ChatMessage::new(Role::User, "Bye"),
    ]
}

fn smollm2_template() -> String {
    let path = std::env::var_os("TABAGENT_TEST_SMOLLM2_GGUF")
        .expect("TABAGENT_TEST_SMOLLM2_GGUF is not set: run the tests with scripts/test");
    let info = tabagent_models::gguf::inspect_file(std::path::Path::new(&path)).unwrap();
    info.chat_template()
        .expect("SmolLM2 carries a chat template")
        .to_string()
}

#[test]
fn smollm2_template_renders_chatml() {
    let template = ChatTemplate::new(&smollm2_template(), "<|im_start|>", "<|im_end|>").unwrap();
    let text = template.render(&conversation(), true).unwrap();
    let expected = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n\
                    <|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n";
    assert_eq!(text, expected);
    let without_prompt = template.render(&conversation(), false).unwrap();
    assert!(
        without_prompt.ends_with("Bye<|im_end|>\n"),
        "{without_prompt:?}"
    );
}

#[test]
fn includes_and_imports_reach_no_file() {
    for source in [
        "{% include '/etc/passwd' %}",
        "{% import 'secrets.j2' as s %}{{ s.x }}",
        "{% extends 'base' %}",
    ] {
        let template = ChatTemplate::new(source, "", "").unwrap();
        let err = template.render(&conversation(), true).unwrap_err();
        assert!(matches!(err, TemplateError::Render(_)), "{source}: {err:?}");
    }
}

#[test]
fn an_endless_template_runs_out_of_fuel() {
    let source =
        "{% for i in range(100000) %}{% for j in range(100000) %}{{ i }}{% endfor %}{% endfor %}";
    let template = ChatTemplate::new(source, "", "").unwrap();
    let err = template.render(&conversation(), true).unwrap_err();
    assert!(err.to_string().contains("fuel"), "{err}");
}

#[test]
fn a_template_cannot_build_a_gigabyte_string() {
    let source = "{{ 'x' * 1000000000 }}";
    let template = ChatTemplate::new(source, "", "").unwrap();
    match template.render(&conversation(), true) {
        Err(TemplateError::Render(_)) => {}
        other => panic!("expected a render error, got {:?}", other.map(|s| s.len())),
    }
}

#[test]
fn raise_exception_becomes_a_clear_error() {
    let source = "{% if messages[0].role != 'user' %}{{ raise_exception('Conversation must start with a user') }}{% endif %}";
    let template = ChatTemplate::new(source, "", "").unwrap();
    let err = template.render(&conversation(), true).unwrap_err();
    assert!(
        err.to_string()
            .contains("Conversation must start with a user"),
        "{err}"
    );
}

#[test]
fn python_string_methods_used_by_real_templates_work() {
    let source = "{% for m in messages %}{{ m.content.strip().upper() }}|{% endfor %}{{ 'a,b'.split(',') | join('+') }}";
    let template = ChatTemplate::new(source, "", "").unwrap();
    assert_eq!(
        template.render(&conversation(), false).unwrap(),
        "BE BRIEF.|HI THERE|HELLO!|BYE|a+b"
    );
}

#[test]
fn a_template_that_does_not_compile_is_refused_at_load() {
    let err = ChatTemplate::new("{% for m in messages %}", "", "").unwrap_err();
    assert!(matches!(err, TemplateError::Compile(_)), "{err:?}");
}
