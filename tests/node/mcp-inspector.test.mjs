// The MCP Inspector's CLI (@modelcontextprotocol/inspector) against `tabagent mcp` over stdio,
// as a user checking the server they wire into an editor would: list the tools, call some.
// Run by scripts/test (`node --test` in tests/node).
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
const inspector = join(here, 'node_modules/.bin/mcp-inspector')
const binary = process.env.TABAGENT_BIN
let dataDir

before(() => {
  if (!binary) throw new Error('TABAGENT_BIN is not set: run scripts/test')
  dataDir = mkdtempSync(join(tmpdir(), 'tabagent-inspector-'))
})

after(() => rmSync(dataDir, { recursive: true, force: true }))

// One Inspector CLI run against a fresh `tabagent mcp`; its JSON answer. (The CLI exits with
// status 5 after printing a tool result that is an error.)
function inspect (...args) {
  let out
  try {
    out = execFileSync(inspector, [
      '--cli', binary, 'mcp',
      '-e', `TABAGENT_DATA_DIR=${dataDir}`, '-e', 'TABAGENT_WORKER__MODE=off',
      ...args,
    ], { encoding: 'utf8', timeout: 120_000, stdio: ['ignore', 'pipe', 'ignore'] })
  } catch (error) {
    if (error.status !== 5) throw error
    out = error.stdout
  }
  return JSON.parse(out)
}

test('the Inspector lists tabagent\'s tools with their schemas', () => {
  const { tools } = inspect('--method', 'tools/list')
  const names = tools.map((t) => t.name)
  for (const name of ['memory_search', 'memory_write', 'graph_lookup', 'document_search', 'chat', 'embed', 'calculator']) {
    assert.ok(names.includes(name), `${name} in ${names}`)
  }
  const search = tools.find((t) => t.name === 'memory_search')
  assert.equal(search.inputSchema.type, 'object')
  assert.deepEqual(search.inputSchema.required, ['query'])
})

test('the Inspector calls tools: a note written is found, a bad call is an error result', () => {
  const wrote = inspect('--method', 'tools/call', '--tool-name', 'memory_write',
    '--tool-arg', 'text=The Orion project has a budget of 4800 euros.')
  assert.equal(wrote.isError, false)
  const found = inspect('--method', 'tools/call', '--tool-name', 'memory_search', '--tool-arg', 'query=Orion budget')
  assert.match(found.content[0].text, /4800 euros/)
  const computed = inspect('--method', 'tools/call', '--tool-name', 'calculator', '--tool-arg', 'expression=4800*0.15')
  assert.match(computed.content[0].text, /= 720\b/)
  const refused = inspect('--method', 'tools/call', '--tool-name', 'calculator', '--tool-arg', 'expression=1/0')
  assert.equal(refused.isError, true)
  assert.match(refused.content[0].text, /division by zero/)
})
