# The agent enabled with neither a key nor an allowed path.
{
  hwc.system.services.backup.agent.enable = true;
}
