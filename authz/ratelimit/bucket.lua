-- Token buckets for one request, all or nothing: the request takes ARGV[1] tokens from every
-- bucket, or from none when any has too few. The clock is Redis's, so proxies' clocks do not
-- matter. A missing key is a full bucket; keys expire once their bucket would be full again.
--
-- KEYS: the buckets. ARGV[1]: tokens the request takes; then for each bucket: maxTokens,
-- tokensPerFill, fillInterval in milliseconds.
-- Returns, for each bucket: 1 when it had enough tokens (0 otherwise), the tokens left, and the
-- milliseconds until its next fill.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local hits = tonumber(ARGV[1])
local tokens, last, enough = {}, {}, true
for i = 1, #KEYS do
  local max, per, iv = tonumber(ARGV[3 * i - 1]), tonumber(ARGV[3 * i]), tonumber(ARGV[3 * i + 1])
  local s = redis.call('HMGET', KEYS[i], 'tokens', 'last')
  local tk, ls = tonumber(s[1]), tonumber(s[2])
  if tk == nil or ls == nil or ls > now then
    tk, ls = max, now
  end
  local fills = math.floor((now - ls) / iv)
  if fills > 0 then
    tk, ls = tk + fills * per, ls + fills * iv
  end
  if tk > max then
    tk = max -- full, or the limit was lowered
  end
  tokens[i], last[i] = tk, ls
  if tk < hits then
    enough = false
  end
end
local out = {}
for i = 1, #KEYS do
  local max, per, iv = tonumber(ARGV[3 * i - 1]), tonumber(ARGV[3 * i]), tonumber(ARGV[3 * i + 1])
  local tk, next_fill = tokens[i], iv - (now - last[i])
  local had = 1
  if tk < hits then
    had = 0
  end
  if enough then
    tk = tk - hits
  end
  local ttl = next_fill
  if tk < max then
    ttl = next_fill + (math.ceil((max - tk) / per) - 1) * iv
  end
  redis.call('HSET', KEYS[i], 'tokens', tk, 'last', last[i])
  redis.call('PEXPIRE', KEYS[i], math.max(ttl, 1))
  out[3 * i - 2], out[3 * i - 1], out[3 * i] = had, tk, next_fill
end
return out
