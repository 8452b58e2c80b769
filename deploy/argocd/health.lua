-- Argo CD health check for stampede.aurum.io/StampedePolicy (Lua 5.1, as Argo CD runs it).
-- Source of truth; deploy/argocd/argocd-cm-patch.yaml embeds it verbatim
-- (regenerate with deploy/argocd/generate.py; tests/deploy/test_argocd.py checks they match).
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

local status = obj.status
if status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the stampede operator to report status"
  return hs
end

local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the stampede operator to act on generation " .. tostring(generation)
  return hs
end

local ready = condition(status, "Ready")
if ready ~= nil and ready.status == "False" then
  hs.status = "Degraded"
  hs.message = ready.message or ready.reason or "Ready is False"
  return hs
end

if obj.spec ~= nil and obj.spec.suspend == true then
  hs.status = "Suspended"
  hs.message = "Suspended: polling and reporting, taking no action and no rollback"
  return hs
end

local conflict = condition(status, "Conflict")
local state = status.state or "Idle"
local incident = status.incident or {}
local severity = status.severity or incident.severity or ""
local phase = status.phase or incident.phase or ""
local mode = ""
if obj.spec ~= nil and obj.spec.mode == "DryRun" then
  mode = " (DryRun: no change made)"
end

if state == "RollingBack" then
  hs.status = "Progressing"
  hs.message = "Rolling back incident " .. (incident.id or "") .. " (severity " .. severity .. ")" .. mode
  return hs
end

if state == "Incident" then
  local message = "Incident " .. (incident.id or "") .. ": severity " .. severity .. ", phase " .. phase
  if incident.escalated == true then
    message = message .. ", escalated"
  end
  if conflict ~= nil and conflict.status == "True" then
    message = message .. "; " .. (conflict.message or "Conflict")
  end
  hs.status = "Degraded"
  hs.message = message .. mode
  return hs
end

if conflict ~= nil and conflict.status == "True" then
  hs.status = "Degraded"
  hs.message = conflict.message or "Conflict"
  return hs
end

hs.status = "Healthy"
hs.message = "Idle: watching" .. mode
return hs
