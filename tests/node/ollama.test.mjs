// The official `ollama` npm package against a real tabagent: SmolLM2 and Qwen2.5-Coder in
// process, MiniLM for embeddings. Run by scripts/test (`node --test` in tests/node).
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { Ollama } from 'ollama'

const env = (name) => {
  const value = process.env[name]
  if (!value) throw new Error(`${name} is not set: run scripts/test`)
  return value
}

let server
let client
let dataDir

before(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'tabagent-node-'))
  const binary = env('TABAGENT_BIN')
  const vars = {
    ...process.env,
    TABAGENT_DATA_DIR: dataDir,
    TABAGENT_MODELS__DIRECTORIES__MINILM: env('TABAGENT_TEST_MINILM_DIR'),
    TABAGENT_ONNX__RUNTIME_LIBRARY: env('TABAGENT_TEST_ORT_LIB'),
  }
  execFileSync(binary, ['import', env('TABAGENT_TEST_SMOLLM2_GGUF'), '--name', 'smollm2'], { env: vars })
  execFileSync(binary, ['import', env('TABAGENT_TEST_QWEN_GGUF'), '--name', 'qwen'], { env: vars })
  server = spawn(binary, ['serve', '--port', '0', '--model', 'smollm2'], {
    env: vars,
    stdio: ['ignore', 'pipe', 'ignore'],
  })
  const lines = createInterface({ input: server.stdout })
  const url = await new Promise((resolve, reject) => {
    server.once('exit', (code) => reject(new Error(`the server exited (${code}) before it listened`)))
    lines.on('line', (line) => {
      const match = line.match(/listening on (http:\/\/\S+)/)
      if (match) resolve(match[1])
    })
  })
  client = new Ollama({ host: url })
})

after(() => {
  server?.kill('SIGTERM')
  rmSync(dataDir, { recursive: true, force: true })
})

test('the models are listed', async () => {
  const { models } = await client.list()
  const names = models.map((m) => m.model)
  assert.ok(names.includes('smollm2') && names.includes('qwen') && names.includes('minilm'), names.join())
  assert.equal(models.find((m) => m.model === 'qwen').details.format, 'gguf')
})

test('a streamed chat adds up to the whole answer', async () => {
  const request = {
    model: 'smollm2',
    messages: [{ role: 'user', content: 'Name a fruit.' }],
    options: { temperature: 0, num_predict: 10 },
  }
  const whole = await client.chat(request)
  assert.equal(whole.done_reason, 'length')
  assert.equal(whole.eval_count, 10)
  let text = ''
  let last
  for await (const part of await client.chat({ ...request, stream: true })) {
    text += part.message.content
    last = part
  }
  assert.equal(text, whole.message.content)
  assert.ok(last.done && last.eval_count === 10)
})

test('a tool is called with arguments as an object', async () => {
  const reply = await client.chat({
    model: 'qwen',
    messages: [{ role: 'user', content: 'What is the weather in Paris? Use the tool.' }],
    tools: [{
      type: 'function',
      function: {
        name: 'get_weather',
        description: 'The current weather in a city',
        parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
      },
    }],
    options: { temperature: 0 },
  })
  assert.deepEqual(reply.message.tool_calls.map((c) => c.function), [
    { name: 'get_weather', arguments: { city: 'Paris' } },
  ])
})

test('embeddings are unit vectors', async () => {
  const { embeddings } = await client.embed({ model: 'minilm', input: ['a cat', 'a dog'] })
  assert.equal(embeddings.length, 2)
  for (const vector of embeddings) {
    assert.equal(vector.length, 384)
    const norm = Math.sqrt(vector.reduce((sum, x) => sum + x * x, 0))
    assert.ok(Math.abs(norm - 1) < 1e-4, `norm ${norm}`)
  }
})

test('an unknown model is a 404 with its name in the message', async () => {
  await assert.rejects(
    client.chat({ model: 'no-such-model', messages: [{ role: 'user', content: 'Hi' }] }),
    (err) => err.name === 'ResponseError' && err.status_code === 404 && err.error.includes('no-such-model'),
  )
})
