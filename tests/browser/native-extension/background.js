// Loaded unpacked by crates/tabagent-server/tests/it/native.rs, which writes config.json beside
// this file: where to report (a loopback listener of the test) and what to ask. The extension
// speaks tabagent's native messaging protocol (docs/native-messaging.md) as any extension would.

const pieces = new Map();

// A message over 1 MiB arrives as pieces of its JSON text: join them, then parse.
function whole(message) {
  if (!("part" in message)) return message;
  const key = JSON.stringify(message.id);
  const text = (pieces.get(key) || "") + message.part;
  if (message.more) {
    pieces.set(key, text);
    return null;
  }
  pieces.delete(key);
  return JSON.parse(text);
}

async function main() {
  const config = await (await fetch(chrome.runtime.getURL("config.json"))).json();
  const result = { models: null, deltas: [], events: 0, finish_reason: null, errors: [] };
  let reported = false;
  const report = (extra) => {
    if (reported) return;
    reported = true;
    fetch(config.result_url, { method: "POST", body: JSON.stringify({ ...result, ...extra }) });
  };
  const port = chrome.runtime.connectNative("ai.tabagent");
  port.onDisconnect.addListener(() => {
    report({ disconnected: chrome.runtime.lastError ? chrome.runtime.lastError.message : "disconnected" });
  });
  port.onMessage.addListener((raw) => {
    const message = whole(raw);
    if (message === null) return;
    if (message.id === "models") {
      result.models = message.body;
      port.postMessage({
        id: "chat",
        path: "/v1/chat/completions",
        body: {
          model: config.model,
          messages: [{ role: "user", content: config.prompt }],
          max_tokens: config.max_tokens,
          temperature: 0,
          stream: true,
        },
      });
    } else if (message.id === "chat" && message.event) {
      result.events += 1;
      const choice = (message.event.choices || [])[0] || {};
      if (choice.delta && choice.delta.content) result.deltas.push(choice.delta.content);
      if (choice.finish_reason) result.finish_reason = choice.finish_reason;
    } else if (message.id === "chat" && message.done) {
      report({ done: true });
      port.disconnect();
    } else {
      result.errors.push(message);
      report({ done: false });
    }
  });
  port.postMessage({ id: "models", path: "/v1/models" });
}

main().catch((err) => console.error("native messaging test failed:", err));
