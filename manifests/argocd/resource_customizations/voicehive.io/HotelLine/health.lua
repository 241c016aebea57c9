-- Argo CD health of a VoiceHive HotelLine (Lua 5.1, run by Argo CD with the object as `obj`).
-- Healthy: Ready=True for the current spec generation. Progressing: the operator has not yet
-- acted on this generation, or the only components not ready are still coming up (warm pool
-- filling, shared Riva loading its model, a check not run yet). Degraded: anything else the
-- operator reports as not ready (invalid spec, missing key Secret, SIP trunk refused, provider
-- unreachable or outside the EU), with the operator's plain-words message.
local hs = {}
local transient = {WarmPoolFilling = true, RivaStarting = true, NotChecked = true}

local function find(conditions, wanted)
  for _, c in ipairs(conditions) do
    if c.type == wanted then
      return c
    end
  end
  return nil
end

if obj.status == nil or obj.status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report the line's conditions"
  return hs
end
local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and observed ~= nil and observed < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to act on spec generation " .. generation
  return hs
end
local ready = find(obj.status.conditions, "Ready")
if ready == nil or ready.status == "Unknown" then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report Ready"
  return hs
end
if ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message or "The line answers calls"
  return hs
end
-- Ready=False: Degraded unless every component that is not ready is still coming up.
if ready.reason ~= "ComponentsNotReady" then
  hs.status = "Degraded"
  hs.message = "Ready " .. (ready.reason or "False") .. ": " .. (ready.message or "")
  return hs
end
local pending = nil
for _, c in ipairs(obj.status.conditions) do
  if c.type ~= "Ready" and c.status ~= "True" then
    if c.status == "False" and not transient[c.reason] then
      hs.status = "Degraded"
      hs.message = c.type .. " " .. (c.reason or "False") .. ": " .. (c.message or "")
      return hs
    end
    pending = pending or c
  end
end
if pending == nil then
  hs.status = "Degraded"
  hs.message = "Ready False: " .. (ready.message or "")
  return hs
end
hs.status = "Progressing"
hs.message = pending.type .. " " .. (pending.reason or "Unknown") .. ": " .. (pending.message or "")
return hs
