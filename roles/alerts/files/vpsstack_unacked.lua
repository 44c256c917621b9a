-- For redis_exporter's --script (roles/alerts): the age in seconds of the oldest message kombu's Redis transport
-- holds unacked. Its unacked_index sorted set scores each delivery with the time it was handed out; Redis hands
-- the message to another worker once that age passes the visibility timeout. Read-only. 0 when none is unacked.
local oldest = redis.call('ZRANGE', 'unacked_index', 0, 0, 'WITHSCORES')
if #oldest == 0 then
  return {'vpsstack_oldest_unacked_age_seconds', '0'}
end
local now = redis.call('TIME')
return {'vpsstack_oldest_unacked_age_seconds', tostring(tonumber(now[1]) - math.floor(tonumber(oldest[2])))}
