terraform {
  required_version = ">= 1.5"
  required_providers {
    cloudflare = {
      source  = "cloudflare/cloudflare"
      version = "~> 4.40"
    }
  }
}

provider "cloudflare" {
  # Reads CLOUDFLARE_API_TOKEN from the environment: a token with Zone.DNS, Zone.Cache Rules,
  # Zone.WAF, Zone.Transform Rules and Zone.Zone Settings edit rights on this zone.
}
