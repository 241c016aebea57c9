-- Argo CD health of a VoiceHive VoiceSession (one phone call; Lua 5.1, the object is `obj`).
-- Pending/Starting: Progressing (waiting for or starting a worker pod). Active: Healthy (the
-- agent is on the call). Ended: Healthy (a finished call is a normal outcome). Failed: Degraded,
-- with the operator's or worker's reason in plain words. The status never holds a phone number.
local hs = {}
local phase = "Pending"
if obj.status ~= nil and obj.status.phase ~= nil then
  phase = obj.status.phase
end
local reason = ""
if obj.status ~= nil and obj.status.endReason ~= nil then
  reason = obj.status.endReason
end
if phase == "Pending" then
  hs.status = "Progressing"
  hs.message = "Waiting for a worker pod to take the call"
elseif phase == "Starting" then
  hs.status = "Progressing"
  hs.message = "Worker pod " .. (obj.status.workerPod or "") .. " is joining the call"
elseif phase == "Active" then
  hs.status = "Healthy"
  hs.message = "Call in progress on worker pod " .. (obj.status.workerPod or "")
elseif phase == "Ended" then
  hs.status = "Healthy"
  hs.message = "Call ended: " .. reason
elseif phase == "Failed" then
  hs.status = "Degraded"
  hs.message = "Call failed: " .. reason
else
  hs.status = "Unknown"
  hs.message = "Unknown phase " .. phase
end
return hs
