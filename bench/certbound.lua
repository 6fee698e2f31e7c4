-- Variant (f): certbound's decision as an Envoy Lua filter, for comparison only.
--
-- Reads the bearer token, base64url-decodes the JWT payload, finds cnf.x5t#S256 with string
-- patterns and compares it with the SHA-256 digest of the connection's peer certificate.
-- It is a lenient imitation (no JSON parser, no duplicate-member or encoding checks), so it does
-- less work than certbound does: the comparison favours Lua.

local value = {}
local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
for i = 1, #alphabet do
  value[alphabet:byte(i)] = i - 1
end

local function b64url_decode(text)
  local out, n, bits, acc = {}, 0, 0, 0
  for i = 1, #text do
    local v = value[text:byte(i)]
    if v == nil then
      return nil
    end
    acc = acc * 64 + v
    bits = bits + 6
    if bits >= 8 then
      bits = bits - 8
      local scale = 2 ^ bits
      local byte = math.floor(acc / scale)
      acc = acc - byte * scale
      n = n + 1
      out[n] = string.char(byte)
    end
  end
  return table.concat(out)
end

local function hex(bytes)
  return (bytes:gsub(".", function(c)
    return string.format("%02x", c:byte())
  end))
end

local function deny(handle, error_code)
  handle:respond({
    [":status"] = "401",
    ["www-authenticate"] = 'Bearer error="' .. error_code .. '"',
  }, "")
end

function envoy_on_request(handle)
  local authorization = handle:headers():get("authorization")
  if authorization == nil then
    return
  end
  local token = authorization:match("^[Bb][Ee][Aa][Rr][Ee][Rr] +([%w%-%._~%+/]+=*)$")
  if token == nil then
    if authorization:match("^[Bb][Ee][Aa][Rr][Ee][Rr]") then
      deny(handle, "invalid_request")
    end
    return
  end
  local encoded = token:match("^[^.]+%.([^.]+)%.[^.]+$")
  if encoded == nil then
    return -- not a JWS: opaque, unbound
  end
  local payload = b64url_decode(encoded)
  if payload == nil then
    return deny(handle, "invalid_token")
  end
  local cnf = payload:match('"cnf"%s*:%s*(%b{})')
  if cnf == nil then
    return -- unbound
  end
  local x5t = cnf:match('"x5t#S256"%s*:%s*"([%w%-_]+)"')
  if x5t == nil then
    return
  end
  local bound = b64url_decode(x5t)
  local ssl = handle:streamInfo():downstreamSslConnection()
  local digest = ssl and ssl:sha256PeerCertificateDigest() or ""
  if bound == nil or hex(bound) ~= digest then
    deny(handle, "invalid_token")
  end
end
