"""MCP both ways, against real MCP software.

tabagent as an MCP client: agents use the tools of a server written with the official Python
SDK (over stdio and over Streamable HTTP) and of the official filesystem server from npm.
tabagent as an MCP server: the official Python SDK's client over `tabagent mcp` (stdio) and over
`/mcp` (Streamable HTTP). (The MCP Inspector CLI's test is in tests/node.)"""
import asyncio
import httpx
import logging
import contextlib
import os
import re
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import openai
import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import McpError

from conftest import MODEL, TOOLS_MODEL, EMBEDDING_MODEL, serving

HERE = Path(__file__).resolve().parent
ORDERS_SERVER = HERE / "mcp_orders.py"
FILESYSTEM_SERVER = HERE.parent / "node/node_modules/@modelcontextprotocol/server-filesystem/dist/index.js"
CODE = "HERON-42"


@contextlib.contextmanager
def orders_over_http():
    """The Python SDK's server on Streamable HTTP: its URL while the block runs."""
    proc = subprocess.Popen([sys.executable, str(ORDERS_SERVER), "streamable-http", "0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        url = None
        for line in proc.stderr:
            match = re.search(r"Uvicorn running on (http://\S+)", line)
            if match:
                url = match.group(1) + "/mcp"
                break
        assert url, "the MCP server exited before it listened"
        # It logs each request: keep reading, or a full pipe would stop it.
        threading.Thread(target=proc.stderr.read, daemon=True).start()
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def base_env(data_dir):
    return dict(os.environ, TABAGENT_DATA_DIR=data_dir,
                TABAGENT_MODELS__DIRECTORIES__MINILM=os.environ["TABAGENT_TEST_MINILM_DIR"],
                TABAGENT_ONNX__RUNTIME_LIBRARY=os.environ["TABAGENT_TEST_ORT_LIB"],
                TABAGENT_MEMORY__EMBEDDING_MODEL=EMBEDDING_MODEL, TABAGENT_WORKER__MODE="off")


@pytest.fixture(scope="module")
def workspace():
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "notes.txt").write_text(f"The access code for the lab is {CODE}.\n")
        yield os.path.realpath(folder)


@pytest.fixture(scope="module")
def server(workspace):
    """tabagent with four MCP servers configured: the Python one over stdio (one tool allowed)
    and over HTTP, the npm filesystem server, and one whose command does not exist."""
    binary = os.environ["TABAGENT_BIN"]
    with tempfile.TemporaryDirectory() as data_dir, orders_over_http() as orders_url:
        config = Path(data_dir, "tabagent.toml")
        config.write_text(f"""
[agent.mcp_servers.orders]
command = {sys.executable!r}
args = [{str(ORDERS_SERVER)!r}, "stdio"]
allowed_tools = ["order_status"]

[agent.mcp_servers.orders_http]
url = {orders_url!r}

[agent.mcp_servers.files]
command = "node"
args = [{str(FILESYSTEM_SERVER)!r}, {workspace!r}]

[agent.mcp_servers.broken]
command = "/nonexistent/mcp-server"
""")
        # No past runs shown to the model: each test's run stands alone.
        env = dict(base_env(data_dir), TABAGENT_AGENT__RECALL="0")
        subprocess.run([binary, "import", os.environ["TABAGENT_TEST_QWEN_GGUF"], "--name", TOOLS_MODEL],
                       check=True, env=env, stdout=subprocess.DEVNULL)
        with serving(["--config", str(config), "--model", TOOLS_MODEL], env) as url:
            yield url


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key="unused-on-loopback", max_retries=0)


def ask(client, task, tools):
    return client.responses.create(model=TOOLS_MODEL, input=task, tools=tools, temperature=0)


def mcp_calls(response, label):
    return [item for item in response.output if item.type == "mcp_call" and item.server_label == label]


@pytest.mark.parametrize("label", ["orders", "orders_http"])
def test_an_mcp_servers_tool_runs_in_an_agent(client, label):
    response = ask(client, "What is the status of order 4417?", [{"type": "mcp", "server_label": label}])
    (call, *_) = mcp_calls(response, label)
    # The second server's tools are named after it: the first's have the plain names.
    assert call.name == {"orders": "order_status", "orders_http": "orders_http_order_status"}[label]
    assert call.error is None
    assert "DHL" in call.output and "DX-99812" in call.output
    assert "DHL" in response.output_text or "DX-99812" in response.output_text


def test_the_npm_filesystem_server_reads_a_file_for_the_agent(client, workspace):
    path = os.path.join(workspace, "notes.txt")
    response = ask(client, f"Read the file {path} and tell me the lab access code.",
                   [{"type": "mcp", "server_label": "files", "allowed_tools": ["read_multiple_files"]}])
    (call, *_) = mcp_calls(response, "files")
    assert call.name == "read_multiple_files" and CODE in call.output
    assert CODE in response.output_text


def test_allowlists_and_unknown_servers_are_refused(client):
    for tools, param, words in [
        # The configuration allows only order_status of this server.
        ([{"type": "mcp", "server_label": "orders", "allowed_tools": ["cancel_order"]}],
         "tools[0].allowed_tools", "offers no tool"),
        # Its command does not exist: it is left out, not fatal.
        ([{"type": "mcp", "server_label": "broken"}], "tools[0].server_label", "no MCP server labelled"),
        ([{"type": "mcp", "server_label": "elsewhere", "server_url": "http://127.0.0.1:1/mcp"}],
         "tools[0]", "cannot add MCP servers"),
    ]:
        with pytest.raises(openai.BadRequestError) as refused:
            ask(client, "Hello", tools)
        error = refused.value.body
        assert error["param"] == param and words in error["message"], error


async def exercise(session):
    """What an MCP client does with tabagent: list, write to memory, search it, embed, ask."""
    hello = await session.initialize()
    assert hello.serverInfo.name == "tabagent"
    tools = {tool.name: tool for tool in (await session.list_tools()).tools}
    assert {"memory_search", "memory_write", "graph_lookup", "document_search", "chat", "embed"} <= set(tools)
    assert tools["memory_search"].annotations.readOnlyHint is True
    assert tools["memory_write"].annotations.readOnlyHint is False
    wrote = await session.call_tool("memory_write", {"text": "The Kestrel sensor samples 48 times per second."})
    assert not wrote.isError and "saved" in wrote.content[0].text
    found = await session.call_tool("memory_search", {"query": "Kestrel sensor"})
    assert "48 times per second" in found.content[0].text
    embedded = await session.call_tool("embed", {"texts": ["one", "two"]})
    assert '"vectors"' in embedded.content[0].text
    bad = await session.call_tool("memory_search", {"wrong": 1})
    assert bad.isError and "invalid arguments" in bad.content[0].text
    with pytest.raises(McpError):
        await session.call_tool("no_such_tool", {})


def test_tabagent_mcp_over_stdio_with_the_python_sdk():
    binary = os.environ["TABAGENT_BIN"]

    async def run(env):
        params = StdioServerParameters(command=binary, args=["mcp", "--model", MODEL], env=env)
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            await exercise(session)
            answer = await session.call_tool("chat", {"prompt": "Say hello.", "max_tokens": 8})
            assert not answer.isError and answer.content[0].text.strip()

    with tempfile.TemporaryDirectory() as data_dir:
        env = base_env(data_dir)
        subprocess.run([binary, "import", os.environ["TABAGENT_TEST_SMOLLM2_GGUF"], "--name", MODEL],
                       check=True, env=env, stdout=subprocess.DEVNULL)
        asyncio.run(run(env))


def test_tabagent_mcp_over_streamable_http_with_the_python_sdk(server, caplog):
    # A document to find: read with the PDFium scripts/test put where tabagent looks by default.
    handbook = Path(__file__).parents[1] / "corpus" / "documents" / "orchard-handbook.pdf"
    with handbook.open("rb") as pdf:
        uploaded = httpx.post(server + "/v1/documents", files={"file": ("handbook.pdf", pdf)}, timeout=120)
    assert uploaded.status_code == 201, uploaded.text

    async def run():
        async with streamable_http_client(server + "/mcp") as (read, write, _), \
                ClientSession(read, write) as session:
            await exercise(session)
            found = await session.call_tool("document_search", {"query": "quince harvest", "limit": 1})
            assert not found.isError
            assert found.content[0].text.startswith("[Orchard Handbook, p. 3]"), found.content[0].text

    with caplog.at_level(logging.DEBUG, logger="mcp"):
        asyncio.run(run())
    # The client ends its session with a DELETE, and the answer is one it takes as done.
    assert "Session termination failed" not in caplog.text
