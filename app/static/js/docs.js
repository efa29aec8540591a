// Starts Swagger UI on /docs. A file rather than an inline script: the pages' Content-Security-Policy
// allows scripts from this origin only. Swagger UI itself is vendored (the swagger-ui-bundle package,
// served under docs/assets/), so the page loads nothing from elsewhere.
window.ui = SwaggerUIBundle({
  url: "openapi.json",
  dom_id: "#swagger-ui",
  layout: "BaseLayout",
  deepLinking: true,
  showExtensions: true,
  showCommonExtensions: true,
  // The default validator badge is an image from validator.swagger.io: no calls to other origins.
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis],
});
