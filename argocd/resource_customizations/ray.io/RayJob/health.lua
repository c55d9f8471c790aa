-- Argo CD health of a KubeRay RayJob (ray.io/v1; Argo CD ships none). KubeRay v1.7 states:
-- jobDeploymentStatus "", Initializing, Running, Complete, Failed, ValidationFailed, Suspending,
-- Suspended, Retrying, Waiting; jobStatus PENDING, RUNNING, STOPPED, SUCCEEDED, FAILED.
-- Success is Complete AND SUCCEEDED: Complete alone is not (a stopped job also completes).
-- Runs in Argo CD's sandbox: no string or math library, only base, table and a safe os.
local hs = {}

local function say(status, fallback)
  local text = fallback
  if status.reason ~= nil and status.reason ~= "" then
    text = status.reason
  end
  if status.message ~= nil and status.message ~= "" then
    text = text .. ": " .. status.message
  end
  return text
end

if obj.status == nil or obj.status.jobDeploymentStatus == nil or obj.status.jobDeploymentStatus == "" then
  if obj.spec ~= nil and obj.spec.suspend == true then
    hs.status = "Suspended"
    hs.message = "RayJob is created suspended"
  else
    hs.status = "Progressing"
    hs.message = "Waiting for KubeRay to start the RayJob"
  end
  return hs
end

local status = obj.status
local generation = obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for KubeRay to act on generation " .. generation
  return hs
end

local deployment = status.jobDeploymentStatus
local job = status.jobStatus or ""

if deployment == "Complete" then
  if job == "SUCCEEDED" then
    hs.status = "Healthy"
    hs.message = "Job succeeded"
  else
    hs.status = "Degraded"
    hs.message = say(status, "Job completed with status " .. job)
  end
elseif deployment == "Failed" or deployment == "ValidationFailed" then
  hs.status = "Degraded"
  hs.message = say(status, deployment)
elseif deployment == "Suspended" or deployment == "Suspending" then
  hs.status = "Suspended"
  hs.message = "RayJob is " .. deployment
elseif deployment == "Initializing" or deployment == "Running" or deployment == "Retrying" or deployment == "Waiting" then
  hs.status = "Progressing"
  hs.message = "RayJob is " .. deployment
  if job ~= "" then
    hs.message = hs.message .. ", job " .. job
  end
else
  hs.status = "Unknown"
  hs.message = "Unknown jobDeploymentStatus " .. tostring(deployment)
end
return hs
