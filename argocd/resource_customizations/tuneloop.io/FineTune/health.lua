-- Argo CD health of a tuneloop FineTune (tuneloop.io/v1alpha1).
-- Decided by status.phase and the Ready condition only: a False domain condition (Promoted=False for
-- a challenger, a Superseded champion) never holds a finished FineTune in Progressing (kserve #4791).
-- Runs in Argo CD's sandbox: no string or math library, only base, table and a safe os.
local hs = {}

local function condition(status, type_)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == type_ then
      return c
    end
  end
  return nil
end

local function describe(c, fallback)
  if c == nil then
    return fallback
  end
  if c.message ~= nil and c.message ~= "" then
    return c.reason .. ": " .. c.message
  end
  return c.reason
end

if obj.status == nil or obj.status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the tuneloop operator to pick up the FineTune"
  return hs
end

local status = obj.status
local generation = obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to act on generation " .. generation
  return hs
end

local ready = condition(status, "Ready")
local phase = status.phase

if phase == "Succeeded" then
  hs.status = "Healthy"
  hs.message = describe(ready, "Succeeded")
elseif phase == "Failed" then
  hs.status = "Degraded"
  hs.message = describe(ready, "Failed")
elseif phase == "Suspended" then
  hs.status = "Suspended"
  hs.message = describe(ready, "Suspended")
elseif phase == "Pending" or phase == "Launching" or phase == "Running" or phase == "Registering" then
  hs.status = "Progressing"
  hs.message = describe(ready, phase)
  if status.waiting ~= nil and status.waiting.reason ~= nil then
    hs.message = phase .. ", waiting since " .. (status.waiting.since or "?") .. " on " .. describe(ready, status.waiting.reason)
  end
else
  hs.status = "Unknown"
  hs.message = "Unknown FineTune phase " .. tostring(phase)
end
return hs
