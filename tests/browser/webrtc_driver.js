// Drives tabagent's /webrtc page as its user would, through the functions of the page's own
// script: evaluated in the page over the DevTools protocol by the Rust tests
// (crates/tabagent-server/tests/it/browser.rs) and scripts/bench-browser, as
// `(DRIVER)(options)`. Resolves with what happened.
//
// options: key (API key), model, prompt, max_tokens, camera (share the camera), frames (wait
// until the server decoded this many frames), vision (a task: face, hands, pose...: wait for
// its first result), bench (this many small requests, timed), connections (this many more
// connections, each closed once open: their setup times), until_closed (then wait, sending
// nothing, until the server closes the session).
async (options) => {
  const outcome = { errors: [] };
  try {
    if (options.key) $("key").value = options.key;
    const camera = Boolean(options.camera) || Boolean(options.vision);
    connection = await connect(camera, options.vision || null);
    outcome.session_id = connection.sessionId;
    outcome.setup_ms = connection.setupMs;
    outcome.setup_phases = connection.phases;
    status(`connected (session ${connection.sessionId})`);
    if (options.connections) {
      outcome.more_setups = [];
      for (let i = 0; i < options.connections; i++) {
        const extra = await connect(false, null);
        outcome.more_setups.push({ setup_ms: extra.setupMs, setup_phases: extra.phases });
        await api("DELETE", `/v1/webrtc/sessions/${extra.sessionId}`);
        extra.pc.close();
      }
    }
    if (options.bench) outcome.bench = await bench(connection.client, options.bench);
    if (options.prompt) {
      const result = await chat(connection.client, options.model || $("model").value, options.prompt,
        options.max_tokens || 64, (text) => { $("reply").textContent = text; });
      Object.assign(outcome, result);
    }
    if (options.frames) outcome.video = await waitForFrames(connection.sessionId, options.frames);
    if (options.vision) outcome.vision = await connection.firstVision;
    if (options.until_closed) {
      // Stays connected, sending nothing, until the server ends the session (idle timeout).
      const since = performance.now();
      if (connection.channel.readyState !== "closed") {
        await new Promise((resolve) => connection.channel.addEventListener("close", resolve));
      }
      outcome.closed_by_server = {
        after_ms: performance.now() - since,
        dtls: connection.pc.sctp ? connection.pc.sctp.transport.state : null,
      };
    }
    outcome.done = true;
  } catch (err) {
    outcome.errors.push(String(err && err.message || err));
  }
  return outcome;
}
