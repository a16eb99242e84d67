// /docs: Swagger UI, from the copy this service serves (console/static/vendor/swagger-ui),
// reading this service's OpenAPI document. A classic script: the bundle defines a global.
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  layout: "BaseLayout",
  deepLinking: true,
  showExtensions: true,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset].filter(Boolean),
});
