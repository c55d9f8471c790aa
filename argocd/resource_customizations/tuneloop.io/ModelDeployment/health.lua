-- Argo CD health of a tuneloop ModelDeployment (tuneloop.io/v1alpha1).
-- Serving is what counts: Ready=True is Healthy even while DriftDetected, QualityDegraded or
-- Retraining say something (they are the loop at work, not a broken deployment; phase Degraded is
-- what marks real trouble). A stray False condition never holds it in Progressing (kserve #4791).
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

if obj.status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the tuneloop operator to pick up the ModelDeployment"
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
local resolved = condition(status, "ModelResolved")
local rolling = condition(status, "RollingOut")
local phase = status.phase

if phase == "Suspended" then
  hs.status = "Suspended"
  hs.message = describe(ready, "Suspended")
  return hs
end
if phase == "Failed" or phase == "Degraded" then
  -- Say what is wrong: a version may still serve (Ready True) while a candidate failed its rollout
  -- or the registry is unreachable, so the first False condition that is not a completion wins.
  local why = nil
  local candidates = {ready, rolling, resolved}  -- any may be nil: no ipairs over the holes
  for i = 1, 3 do
    local c = candidates[i]
    if why == nil and c ~= nil and c.status == "False" and c.reason ~= "RolloutComplete" then
      why = c
    end
  end
  hs.status = "Degraded"
  hs.message = describe(why or ready, phase)
  return hs
end
if ready ~= nil and ready.status == "False" and (ready.reason == "DeployFailed" or ready.reason == "Unhealthy") then
  hs.status = "Degraded"
  hs.message = describe(ready, ready.reason)
  return hs
end
if rolling ~= nil and rolling.status == "True" then
  hs.status = "Progressing"
  hs.message = describe(rolling, "RollingOut")
  return hs
end
if resolved ~= nil and resolved.status == "False" then
  hs.status = "Progressing"
  hs.message = describe(resolved, "ModelResolved")
  return hs
end
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(ready, "Serving")
  return hs
end
hs.status = "Progressing"
hs.message = describe(ready, phase or "Pending")
return hs
