"""MCP servers as tool providers, through the official `mcp` SDK.

```python
Agent(mcp_servers=[MCPServerStdio("python", ["calendar_server.py"]),
                   MCPServerHTTP("http://127.0.0.1:8000/mcp")])
```
"""

from .server import MCPServer, MCPServerHTTP, MCPServerStdio
from .tool import MCPTool, MCPToolError

__all__ = ["MCPServer", "MCPServerHTTP", "MCPServerStdio", "MCPTool", "MCPToolError"]
