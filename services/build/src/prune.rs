//! The build cache's prune: berth's build cache is its builds' intermediate images (each
//! step's image, labelled `berth.image.intermediate` and found again through the step index,
//! which forgets an image that is gone). [`prune`] removes those no container uses, through
//! the image service, and reports what it removed as Docker's `/build/prune` does.

use berth_api::build::v1::PruneBuildCacheResponse;
use berth_api::images::v1 as iapi;
use berth_api::images::v1::images_client::ImagesClient;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// The label the executor puts on every step's image.
const INTERMEDIATE_LABEL: &str = "berth.image.intermediate";

/// Removes namespace `ns`'s intermediate build images that no container uses.
pub async fn prune(
    images: &mut ImagesClient<Channel>,
    ns: &str,
) -> Result<PruneBuildCacheResponse, Status> {
    let listed = images
        .list(berth_core::grpc::request(
            ns,
            iapi::ListImagesRequest {
                filters: vec![],
                all: true,
            },
        ))
        .await?
        .into_inner()
        .images;
    let mut out = PruneBuildCacheResponse::default();
    for summary in listed.into_iter().filter(is_intermediate) {
        if out.caches_deleted.contains(&summary.id) {
            continue;
        }
        let removed = images
            .delete(berth_core::grpc::request(
                ns,
                iapi::DeleteImageRequest {
                    name: summary.id.clone(),
                    force: false,
                },
            ))
            .await;
        match removed {
            Ok(_) => {
                out.space_reclaimed += summary.size.max(0) as u64;
                out.caches_deleted.push(summary.id);
            }
            // Used by a container, or gone meanwhile: not unused cache.
            Err(s) if matches!(s.code(), Code::FailedPrecondition | Code::NotFound) => {}
            Err(s) => return Err(s),
        }
    }
    Ok(out)
}

fn is_intermediate(s: &iapi::ImageSummary) -> bool {
    s.image
        .as_ref()
        .is_some_and(|i| i.labels.contains_key(INTERMEDIATE_LABEL))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_labelled_images_are_cache() {
        let mut labelled = iapi::Image::default();
        labelled
            .labels
            .insert(INTERMEDIATE_LABEL.to_string(), "true".to_string());
        let cache = iapi::ImageSummary {
            image: Some(labelled),
            ..Default::default()
        };
        let tagged = iapi::ImageSummary {
            image: Some(iapi::Image::default()),
            ..Default::default()
        };
        assert!(is_intermediate(&cache));
        assert!(!is_intermediate(&tagged));
        assert!(!is_intermediate(&iapi::ImageSummary::default()));
    }
}
