variable "zone_id" {
  description = "Cloudflare zone ID of the shop's domain."
  type        = string
}

variable "hostname" {
  description = "The image hostname, e.g. img.shop.example."
  type        = string
}

variable "origin_hostname" {
  description = "Where originshield is reachable (load balancer or Tunnel hostname)."
  type        = string
}

variable "signing_key" {
  description = "The first signing key of originshield (signing.keys); the WAF checks verify= tokens with it."
  type        = string
  sensitive   = true
}

variable "token_ttl" {
  description = "Seconds a verify= token lives; must equal originshield's signing.ttl."
  type        = number
  default     = 3600
}

variable "origin_lock_secret" {
  description = "The value of X-Origin-Auth that originshield expects (origin_lock.secrets)."
  type        = string
  sensitive   = true
}

variable "origin_lock_header" {
  description = "The header name; must equal originshield's origin_lock.header."
  type        = string
  default     = "X-Origin-Auth"
}

variable "enable_waf_token_check" {
  description = "Block bad verify= tokens at the edge (is_timed_hmac_valid_v0 needs the Pro plan or above)."
  type        = bool
  default     = false
}

variable "enable_tiered_cache" {
  description = "Smart Tiered Cache: fewer edge locations ask the origin."
  type        = bool
  default     = true
}
