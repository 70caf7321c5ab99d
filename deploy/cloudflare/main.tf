locals {
  image_host = "(http.host eq \"${var.hostname}\")"
  # is_timed_hmac_valid_v0(secret, message, ttl, now, separator length): the message is the
  # URI (path and query) up to "?verify=" or "&verify=", both 8 characters long.
  # https://developers.cloudflare.com/ruleset-engine/rules-language/functions/#hmac-validation
  verify_expression = join(" ", [
    local.image_host,
    "and http.request.uri.query contains \"verify=\"",
    "and not is_timed_hmac_valid_v0(\"${var.signing_key}\", http.request.uri, ${var.token_ttl}, http.request.timestamp.sec, 8)",
  ])
}

# The image hostname, proxied through Cloudflare to originshield.
resource "cloudflare_record" "images" {
  zone_id = var.zone_id
  name    = var.hostname
  type    = "CNAME"
  content = var.origin_hostname
  proxied = true
  ttl     = 1
  comment = "originshield image origin"
}

# Make the image path eligible for cache and let originshield's headers decide the TTLs
# (Cloudflare-CDN-Cache-Control for the edge, Cache-Control for browsers).
resource "cloudflare_ruleset" "cache" {
  zone_id     = var.zone_id
  name        = "originshield cache rules"
  description = "Cache images served by originshield, respecting origin headers"
  kind        = "zone"
  phase       = "http_request_cache_settings"

  rules {
    description = "Cache every image URL, with the origin's TTLs"
    expression  = local.image_host
    action      = "set_cache_settings"
    enabled     = true
    action_parameters {
      cache = true
      edge_ttl {
        mode = "respect_origin"
      }
      browser_ttl {
        mode = "respect_origin"
      }
      serve_stale {
        disable_stale_while_updating = false
      }
    }
  }
}

# Optional (Pro plan and above): refuse bad or expired verify= tokens at the edge, so they never
# reach the origin. originshield checks them again.
resource "cloudflare_ruleset" "waf" {
  count       = var.enable_waf_token_check ? 1 : 0
  zone_id     = var.zone_id
  name        = "originshield token check"
  description = "Block image URLs whose verify= token is invalid or expired"
  kind        = "zone"
  phase       = "http_request_firewall_custom"

  rules {
    description = "Invalid or expired verify= token"
    expression  = local.verify_expression
    action      = "block"
    enabled     = true
  }
}

# Add the origin-lock secret header to every request Cloudflare sends to the origin.
resource "cloudflare_ruleset" "origin_lock" {
  zone_id     = var.zone_id
  name        = "originshield origin lock"
  description = "Prove to originshield that a request came through Cloudflare"
  kind        = "zone"
  phase       = "http_request_late_transform"

  rules {
    description = "Set the origin-lock header"
    expression  = local.image_host
    action      = "rewrite"
    enabled     = true
    action_parameters {
      headers {
        name      = var.origin_lock_header
        operation = "set"
        value     = var.origin_lock_secret
      }
    }
  }
}

resource "cloudflare_tiered_cache" "images" {
  count      = var.enable_tiered_cache ? 1 : 0
  zone_id    = var.zone_id
  cache_type = "smart"
}
