# An agent the module must refuse: a key that already carries options, a key without its
# base64 part, relative and unclean allowed paths. (Line breaks are refused by the option types.)
{
  hwc.system.services.backup.agent = {
    enable = true;
    authorizedKeys = [
      "from=\"10.0.0.1\" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIL0sxTGihcR4DNdyASDHmaMWYlpHe0M9VH5B6qP2mxQv"
      "ssh-ed25519"
      "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIL0sxTGihcR4DNdyASDHmaMWYlpHe0M9VH5B6qP2mxQv fine"
    ];
    allowedPaths = [
      "home"
      "/srv/"
      "/var/../etc"
    ];
  };
}
