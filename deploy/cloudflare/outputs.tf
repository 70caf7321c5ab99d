output "image_hostname" {
  description = "The proxied hostname to put in signed URLs (Signer base_url)."
  value       = "https://${var.hostname}"
}

output "waf_token_check_enabled" {
  description = "Whether verify= tokens are checked at the edge."
  value       = var.enable_waf_token_check
}
