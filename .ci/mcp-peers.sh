# The MCP peers the end-to-end tests talk to (crates/arbiter-cli/tests/mcp.rs): the
# official MCP Python SDK as the agent, @modelcontextprotocol/server-everything as the
# server. Sourced by .ci/run (or by hand: `source .ci/mcp-peers.sh`): installs each one
# once, quietly, into a cache outside the clone, and exports where they are. Versions are
# pinned so that a run tests what the last one tested; a new pin installs anew.
MCP_PYTHON_SDK_VERSION=2.3.0
MCP_EVERYTHING_VERSION=2026.8.31

mcp_cache="${XDG_CACHE_HOME:-$HOME/.cache}/arbiter-ci"
mkdir -p "$mcp_cache"

mcp_venv="$mcp_cache/mcp-python-$MCP_PYTHON_SDK_VERSION"
if ! "$mcp_venv/bin/python" -c 'import mcp.client.stdio' 2>/dev/null; then
  if ! command -v python3 >/dev/null || ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv >/dev/null
  fi
  rm -rf "$mcp_venv"
  python3 -m venv "$mcp_venv"
  "$mcp_venv/bin/pip" install --quiet --disable-pip-version-check "mcp==$MCP_PYTHON_SDK_VERSION"
fi

if ! command -v node >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
fi
mcp_npm="$mcp_cache/mcp-everything-$MCP_EVERYTHING_VERSION"
if [ ! -f "$mcp_npm/.installed" ]; then
  rm -rf "$mcp_npm"
  npm install --prefix "$mcp_npm" --no-audit --no-fund --loglevel=error --silent \
    "@modelcontextprotocol/server-everything@$MCP_EVERYTHING_VERSION" >/dev/null
  touch "$mcp_npm/.installed"
fi

export ARBITER_MCP_PYTHON="$mcp_venv/bin/python"
export ARBITER_MCP_NODE="$(command -v node)"
export ARBITER_MCP_EVERYTHING="$mcp_npm/node_modules/@modelcontextprotocol/server-everything/dist/index.js"
