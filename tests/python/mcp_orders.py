"""A small MCP server written with the official Python SDK (FastMCP), for tabagent's MCP
client tests: `python mcp_orders.py stdio`, or `python mcp_orders.py streamable-http PORT`."""
import sys

from mcp.server.fastmcp import FastMCP

ORDERS = {"4417": "shipped on 2026-11-30 with DHL, tracking number DX-99812",
          "5120": "waiting for payment"}

port = int(sys.argv[2]) if len(sys.argv) > 2 else 8000
app = FastMCP("orders", host="127.0.0.1", port=port, log_level="INFO")


@app.tool()
def order_status(order_id: str) -> str:
    """The shipping status of a customer order, by its order number."""
    return ORDERS.get(order_id.strip().lstrip("#"), f"there is no order {order_id}")


@app.tool()
def cancel_order(order_id: str) -> str:
    """Cancel a customer order."""
    return f"order {order_id} cancelled"


if __name__ == "__main__":
    app.run(transport=sys.argv[1])
