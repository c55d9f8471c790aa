-- Argo CD health of a KubeRay RayService (ray.io/v1; Argo CD ships none). Conditions Ready (serve
-- endpoints > 0), UpgradeInProgress and RollbackInProgress; per-application Serve status in
-- activeServiceStatus.applicationStatuses. KubeRay does not act on DEPLOY_FAILED or UNHEALTHY
-- applications, so they are Degraded here even while Ready is True. serviceStatus (deprecated) is
-- read only when there are no conditions (KubeRay before 1.3).
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
  if c.message ~= nil and c.message ~= "" then
    return c.reason .. ": " .. c.message
  end
  return c.reason or fallback
end

if obj.status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for KubeRay to start the RayService"
  return hs
end

local status = obj.status
local generation = obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for KubeRay to act on generation " .. generation
  return hs
end

-- Failing applications of the active cluster, in name order (the message must not flap).
local failing = {}
if status.activeServiceStatus ~= nil and status.activeServiceStatus.applicationStatuses ~= nil then
  local names = {}
  for name, _ in pairs(status.activeServiceStatus.applicationStatuses) do
    table.insert(names, name)
  end
  table.sort(names)
  for _, name in ipairs(names) do
    local app = status.activeServiceStatus.applicationStatuses[name]
    if app.status == "DEPLOY_FAILED" or app.status == "UNHEALTHY" then
      local text = "application " .. name .. " is " .. app.status
      if app.message ~= nil and app.message ~= "" then
        text = text .. ": " .. app.message
      end
      table.insert(failing, text)
    end
  end
end
if #failing > 0 then
  hs.status = "Degraded"
  hs.message = table.concat(failing, "; ")
  return hs
end

local ready = condition(status, "Ready")
local upgrading = condition(status, "UpgradeInProgress")
local rolling_back = condition(status, "RollbackInProgress")

if rolling_back ~= nil and rolling_back.status == "True" then
  hs.status = "Progressing"
  hs.message = describe(rolling_back, "RollbackInProgress")
elseif upgrading ~= nil and upgrading.status == "True" then
  hs.status = "Progressing"
  hs.message = describe(upgrading, "UpgradeInProgress")
elseif ready ~= nil then
  if ready.status == "True" then
    hs.status = "Healthy"
  else
    hs.status = "Progressing"
  end
  hs.message = describe(ready, "Ready")
elseif status.serviceStatus == "Running" then
  hs.status = "Healthy"
  hs.message = "Running"
else
  hs.status = "Progressing"
  hs.message = "Waiting for the RayService to serve"
end
return hs
