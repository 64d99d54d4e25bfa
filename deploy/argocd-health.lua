-- Argo CD health check for cloud.kliv.dev kinds (resource.customizations.health.cloud.kliv.dev_*):
-- Healthy when Ready is True for the current generation, Degraded on a permanent refusal,
-- Progressing otherwise.
local hs = {status = "Progressing", message = "Waiting for the kliv operator"}
if obj.status == nil or obj.status.conditions == nil then
  return hs
end
local generation = obj.metadata.generation
for _, condition in ipairs(obj.status.conditions) do
  if condition.type == "Ready" then
    hs.message = condition.message
    if condition.observedGeneration ~= nil and condition.observedGeneration ~= generation then
      hs.status = "Progressing"
    elseif condition.status == "True" then
      hs.status = "Healthy"
    elseif condition.reason == "InvalidSpec" or condition.reason == "DataLossRefused"
        or condition.reason == "AlreadyExists" or condition.reason == "NotSupported" then
      hs.status = "Degraded"
    else
      hs.status = "Progressing"
    end
  end
end
return hs
