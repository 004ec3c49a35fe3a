# A client pulled by a server, and nothing else: the agent's authorized_keys entries (one key
# per server), no plan and no units. An exclude pattern and a path that need shell quoting.
{
  networking.hostName = "web1";
  services.openssh.enable = true;
  hwc.system.services.backup.agent = {
    enable = true;
    authorizedKeys = [
      "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIL0sxTGihcR4DNdyASDHmaMWYlpHe0M9VH5B6qP2mxQv backup@nas"
      "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBOfjjpwOFtJKEIZkRbZI2vLmcSkypf7Ss3kCSg5jAtH9+z3s1VYC4TxzTYgZc0OBxSqVdc1i7fDs3rW7SpbsWXk="
    ];
    allowedPaths = [
      "/etc"
      "/var/www"
      "/srv/Bob's files"
    ];
    excludePatterns = [
      "*.key"
      "/var/www/*/cache/"
    ];
  };
}
